// Package kubernetes checks the manifests beside it: they decode strictly
// into the k8s.io/api types, so a misspelt field fails, and the shutdown
// budget in the container's flags fits the pod's grace period.
package kubernetes

import (
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// margin is what shutdown.WithGracePeriod leaves for the runtime to exit.
const margin = 2 * time.Second

func decode(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// flags parses the container's args as examples/httpserver does, with its
// defaults.
type flags struct {
	addr           string
	drain, timeout time.Duration
}

func parseArgs(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("httpserver", flag.ContinueOnError)
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "")
	fs.DurationVar(&f.drain, "drain-delay", 5*time.Second, "")
	fs.DurationVar(&f.timeout, "timeout", 25*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return f, nil
}

func TestDeployments(t *testing.T) {
	for _, path := range []string{"deployment.yaml", "prestop/deployment.yaml"} {
		t.Run(path, func(t *testing.T) {
			var d appsv1.Deployment
			decode(t, path, &d)
			checkDeployment(t, &d)
		})
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	if d.APIVersion != "apps/v1" || d.Kind != "Deployment" {
		t.Errorf("apiVersion/kind = %s/%s, want apps/v1/Deployment", d.APIVersion, d.Kind)
	}
	if d.Spec.Selector == nil {
		t.Fatal("no selector")
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	pod := d.Spec.Template.Spec
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		t.Errorf("command %q replaces the image's exec-form ENTRYPOINT", c.Command)
	}
	f, err := parseArgs(c.Args)
	if err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}

	var preStop time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil {
		switch {
		case l.PreStop.Sleep != nil:
			preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		case l.PreStop.Exec != nil:
			t.Errorf("preStop exec %q: distroless images have no sleep; use the sleep action", l.PreStop.Exec.Command)
		default:
			t.Error("preStop hook of unknown duration")
		}
	}
	if budget := grace - preStop - margin; f.timeout > budget {
		t.Errorf("-timeout=%v does not fit: grace %v - preStop %v - margin %v = %v", f.timeout, grace, preStop, margin, budget)
	}
	if f.drain >= f.timeout {
		t.Errorf("-drain-delay=%v is not shorter than -timeout=%v", f.drain, f.timeout)
	}
	if preStop > 0 && f.drain != 0 {
		t.Errorf("-drain-delay=%v with a %v preStop sleep: the sleep was the drain, use 0", f.drain, preStop)
	}
	if preStop == 0 && f.drain == 0 {
		t.Error("no preStop sleep and -drain-delay=0: nothing covers the endpoint propagation")
	}

	host, port, err := net.SplitHostPort(f.addr)
	if err != nil {
		t.Fatalf("-addr=%s: %v", f.addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		t.Errorf("-addr=%s listens on loopback: the kubelet probes the pod's IP", f.addr)
	}
	pn, _ := strconv.Atoi(port)
	checkProbe(t, "readinessProbe", c.ReadinessProbe, "/readyz", c.Ports, pn)
	checkProbe(t, "livenessProbe", c.LivenessProbe, "/livez", c.Ports, pn)
}

// checkProbe checks that p GETs path on the port the program listens on.
func checkProbe(t *testing.T, name string, p *corev1.Probe, path string, ports []corev1.ContainerPort, listen int) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe of %s", name, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %s, want %s", name, p.HTTPGet.Path, path)
	}
	if got := resolvePort(p.HTTPGet.Port, ports); got != listen {
		t.Errorf("%s: port %s is %d, the program listens on %d", name, p.HTTPGet.Port.String(), got, listen)
	}
}

func resolvePort(p intstr.IntOrString, ports []corev1.ContainerPort) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

func TestService(t *testing.T) {
	var s corev1.Service
	decode(t, "service.yaml", &s)
	var d appsv1.Deployment
	decode(t, "deployment.yaml", &d)
	if s.APIVersion != "v1" || s.Kind != "Service" {
		t.Errorf("apiVersion/kind = %s/%s, want v1/Service", s.APIVersion, s.Kind)
	}
	if len(s.Spec.Selector) == 0 {
		t.Error("Service has no selector")
	}
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Service selector %s=%s matches no pod of the Deployment", k, v)
		}
	}
	for _, p := range s.Spec.Ports {
		if resolvePort(p.TargetPort, d.Spec.Template.Spec.Containers[0].Ports) < 0 {
			t.Errorf("Service port %s: targetPort %s is not a container port", p.Name, p.TargetPort.String())
		}
	}
}

// TestStrict checks that the decoding is strict: a misspelt field fails.
func TestStrict(t *testing.T) {
	var d appsv1.Deployment
	err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      terminationGracePeriodSecond: 30\n"), &d)
	if err == nil {
		t.Error("UnmarshalStrict accepted terminationGracePeriodSecond")
	}
}

// TestDockerfile checks that the image's ENTRYPOINT is in exec form, so the
// program, not a shell, is PID 1 and receives SIGTERM.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENTRYPOINT\s+(.*)$`).FindAllSubmatch(b, -1)
	if len(m) != 1 {
		t.Fatalf("%d ENTRYPOINT lines, want 1", len(m))
	}
	if e := string(m[0][1]); e == "" || e[0] != '[' {
		t.Errorf("ENTRYPOINT %s is in shell form; use the exec form [\"/httpserver\"]", e)
	}
}
