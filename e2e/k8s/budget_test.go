package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"text/template"
)

// The seed's lesson on a real node: a shutdown budget longer than the pod's
// grace period loses the hooks that come last. The grace period is 10 s and
// the slow hook needs 15 s, instead of 30 s and 45 s, to keep CI short: the
// same race, a third of the wait.
const (
	budgetGrace = 10 // terminationGracePeriodSeconds
	budgetHook  = "15s"
)

var budgetPod = template.Must(template.New("").Parse(`
apiVersion: v1
kind: Pod
metadata: {name: {{.Name}}, labels: {app: {{.Name}}}}
spec:
  terminationGracePeriodSeconds: {{.Grace}}
  automountServiceAccountToken: false
  enableServiceLinks: false
  restartPolicy: Never
  containers:
    - name: app
      image: shutdown.local/service:1
      imagePullPolicy: Never
      args: ["-mode={{.Mode}}", "-grace={{.Grace}}s", "-hook={{.Hook}}"]
`))

// stopPod starts a pod of cmd/service in mode, deletes it once its
// program waits for SIGTERM, and returns how it ended.
func stopPod(t *testing.T, name, mode string) podEnd {
	t.Helper()
	var yaml strings.Builder
	err := budgetPod.Execute(&yaml, map[string]any{"Name": name, "Mode": mode, "Grace": budgetGrace, "Hook": budgetHook})
	if err != nil {
		t.Fatal(err)
	}
	mustKubectl(t, yaml.String(), "apply", "-f", "-")
	t.Cleanup(func() { kubectl(context.Background(), "", "delete", "pod", name, "--wait=false") })
	eventually(t, "the program waits for SIGTERM", 90, func() error {
		out, err := kubectl(context.Background(), "", "logs", name)
		if err == nil && !strings.Contains(out, "waiting for SIGTERM") {
			err = fmt.Errorf("not yet: %q", out)
		}
		return err
	})
	w := watchPods(t, "app="+name, []string{name})
	mustKubectl(t, "", "delete", "pod", name, "--wait=false")
	return w.wait(t, budgetGrace+60)[0]
}

// TestBudgetLongerThanGracePeriodIsKilledBeforeFlush: with WithTimeout(60s)
// the kubelet SIGKILLs the pod at the end of its grace period while the
// slow hook runs: exit code 137, and the flush (added before the slow hook,
// so run after it) never ran.
func TestBudgetLongerThanGracePeriodIsKilledBeforeFlush(t *testing.T) {
	p := stopPod(t, "budget-timeout", "budget-timeout")
	addPodRow("budget 60 s > grace 10 s, hook needs 15 s", "WithTimeout(60s)", p, budgetGrace)
	if !p.Terminated || p.ExitCode != 137 {
		t.Errorf("terminated %v with exit code %d (%s), want 137 (SIGKILL); last lines:\n%s", p.Terminated, p.ExitCode, p.Reason, p.lastLines(8))
	}
	if !p.logged("slow: started") || p.logged("flush: ran") || p.logged("msg=exiting") {
		t.Errorf("want the slow hook started, and no flush and no exit line; last lines:\n%s", p.lastLines(8))
	}
	t.Logf("last lines:\n%s", p.lastLines(4))
}

// TestGracePeriodBudgetAbandonsSlowHookAndFlushes: with
// WithGracePeriod(10s, 0) the budget (8 s) ends before the grace period:
// the slow hook is cut off and named in the result, the flush still runs,
// and the program exits on its own (1, for the failed hook), not SIGKILLed.
func TestGracePeriodBudgetAbandonsSlowHookAndFlushes(t *testing.T) {
	p := stopPod(t, "budget-grace", "budget-grace")
	addPodRow("budget 60 s > grace 10 s, hook needs 15 s", "WithGracePeriod(10s, 0)", p, budgetGrace)
	if !p.Terminated || p.ExitCode != 1 {
		t.Errorf("terminated %v with exit code %d (%s), want 1 (exited on its own after a failed hook); last lines:\n%s", p.Terminated, p.ExitCode, p.Reason, p.lastLines(8))
	}
	if !p.logged("flush: ran") || !p.logged(`hook \"slow\"`) || !p.logged("msg=exiting") {
		t.Errorf(`want "flush: ran", the slow hook named in the result and "exiting"; last lines:`+"\n%s", p.lastLines(8))
	}
	if sig, ok := p.signalled("shutdown: started"); !ok || p.exited().Sub(sig).Seconds() >= budgetGrace {
		t.Errorf("SIGTERM → exit %v (signal logged: %v), want less than the %ds grace period", p.exited().Sub(sig), ok, budgetGrace)
	}
	t.Logf("last lines:\n%s", p.lastLines(4))
}
