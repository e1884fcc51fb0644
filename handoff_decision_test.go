package shutdown

import (
	"context"
	"errors"
	"testing"
)

// The new process's Ready, once read, and a shutdown signal race in the
// old process: whichever came first decides. A shutdown that started
// first wins (the new process is killed); a Ready read first makes the
// shutdown an upgrade's, whatever starts it: the handoff, not the drain.
func TestReadyReadOrShutdownFirstDecidesHandoff(t *testing.T) {
	m := newTest()
	m.Trigger()
	if m.takeOver() {
		t.Error("takeOver after the shutdown started = true, want false")
	}
	m.Wait()
	if m.handingOver() {
		t.Error("a shutdown that came first hands over")
	}

	m = newTest(WithDrainDelay(DefaultTimeout / 2)) // a drain would outlast the test's guard
	if !m.takeOver() {
		t.Fatal("takeOver before any shutdown = false, want true")
	}
	m.TriggerCause(errors.New("a signal right after Ready was read"))
	<-m.Done()
	if !m.handingOver() {
		t.Error("the shutdown after Ready was read does not hand over")
	}
	if got := context.Cause(m.Context()).Error(); got != "a signal right after Ready was read" {
		t.Errorf("cause %q", got)
	}
}
