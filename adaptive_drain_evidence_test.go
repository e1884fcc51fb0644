package shutdown

import (
	"testing"
	"testing/synctest"
	"time"
)

// More of the adaptive drain's evidence rules, in synctest bubbles: the
// exact arrival, and requests that end otherwise than by writing or
// returning.

func TestAdaptiveDrainEndsAtExactArrivalPlusQ(t *testing.T) {
	// Requests between whole milliseconds: the drain ends Q after the last
	// one's arrival, not Q after its millisecond (which would end it while
	// that request is still inside (t − Q, t]).
	synctest.Test(t, func(t *testing.T) {
		r := newDrainRig(time.Second, 10*time.Second)
		r.send("/", "Go-http-client/1.1", 500*time.Microsecond, 31500*time.Millisecond, 10*time.Millisecond)
		// The last request arrives at 31.4905s: the drain ends at 32.4905s.
		if got, want := r.triggerAt(30*time.Second), 2490500*time.Microsecond; got != want {
			t.Errorf("drain lasted %v, want %v: the last arrival plus Q of 1s", got, want)
		}
		r.wait()
	})
}
