package pool

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

const brokenCommand = "/no/such/agent"

// brokenJobs makes templates that mention "broken" run brokenCommand.
func brokenJobs(srv *pooltest.Server) {
	srv.SetBrokenCommand(brokenCommand)
	srv.SetParseFunc(parseByBody(map[string]func() *api.Job{
		"broken": func() *api.Job {
			j, _ := pooltest.DefaultJob("")
			j.TaskGroups[0].Tasks[0].Config["command"] = brokenCommand
			return j
		},
	}))
}

// fastFailures makes a Manager back off from 20 ms and read the jobspec of
// a failing pool every 50 ms, so a test sees many failures quickly.
func fastFailures(m *Manager) {
	for _, p := range m.pools {
		p.failureBase = 20 * time.Millisecond
	}
	m.failureWatch = 50 * time.Millisecond
}

// A template whose command does not exist: the pool says so with Nomad's
// reason, a claim on it fails at once with that reason, the other pool
// keeps serving, and fixing the jobspec on disk brings it back.
func TestBrokenTemplateFailsLoudlyAndRecovers(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	brokenJobs(srv)
	bad := jobspecFile(t, `job "broken" {}`)
	m := newManager(t, srv, fastFailures,
		Config{Name: "bad", Jobspec: bad, Size: 2, Max: 4}, Config{Name: "good", Size: 1, Max: 2})
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the bad pool failing", func() bool { return m.Stats()["bad"].Error != "" })
	st := m.Stats()
	for _, want := range []string{`pool "bad" is failing`, "Driver Failure", brokenCommand, "no such file or directory"} {
		if !strings.Contains(st["bad"].Error, want) {
			t.Errorf("error of the bad pool %q does not say %q", st["bad"].Error, want)
		}
	}
	if st["good"].Error != "" {
		t.Errorf("the good pool reports %q", st["good"].Error)
	}

	// A claim does not wait out its timeout for a warm allocation that
	// cannot come.
	_, err := m.Claim(ctx(t, time.Minute), "bad", Owner{})
	if !errors.Is(err, ErrFailing) || !strings.Contains(err.Error(), brokenCommand) {
		t.Fatalf("claim on the failing pool: %v", err)
	}
	waitFor(t, 5*time.Second, "the good pool warm", func() bool { return m.Stats()["good"].Warm == 1 })
	if _, err := m.Claim(ctx(t, 5*time.Second), "good", Owner{}); err != nil {
		t.Fatalf("claim on the good pool next to a failing one: %v", err)
	}
	// Once failing, it tries one instance at a time.
	parent := ParentJobID("bad", pooltest.NodeID)
	if n := len(srv.Children(parent)); n > 1 {
		t.Errorf("%d instances of the failing template at once", n)
	}

	if err := writeFile(bad, `job "fixed" {}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the fixed pool warm", func() bool {
		s := m.Stats()["bad"]
		return s.Warm == 2 && s.Error == ""
	})
	if _, err := m.Claim(ctx(t, 5*time.Second), "bad", Owner{}); err != nil {
		t.Fatalf("claim on the fixed pool: %v", err)
	}
}

// Re-dispatches of a failing template back off exponentially: from the
// fifth on, each pause is longer than the one three failures before. Pause k
// is between base<<k/2 and base<<k (jitter), so it is at least 3*base<<(k-3)
// longer than pause k-3 can be (120 ms at the fifth, base 20 ms): that
// margin, where two failures apart it is none, outlasts the spread in how
// soon a failure is seen (failureWatch, 50 ms) on a loaded machine or under
// -race.
func TestFailingTemplateBacksOffExponentially(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	brokenJobs(srv)
	m := newManager(t, srv, fastFailures, Config{Name: "bad", Jobspec: jobspecFile(t, `job "broken" {}`), Size: 1, Max: 4})
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "8 dispatches", func() bool { return len(srv.Dispatches()) >= 8 })
	d := srv.Dispatches()
	var gaps []time.Duration
	for i := 1; i < len(d); i++ {
		gaps = append(gaps, d[i].Sub(d[i-1]))
	}
	for i := 4; i < len(gaps); i++ {
		if gaps[i] <= gaps[i-3] {
			t.Errorf("pause %d (%s) not longer than pause %d (%s): %v", i, gaps[i], i-3, gaps[i-3], gaps)
		}
	}
}

// A template the scheduler cannot place (a constraint no node meets, more
// memory than the node has) fails the pool at once, with the scheduler's
// reason, and is not dispatched again and again.
func TestUnplaceableTemplateFailsAtOnce(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	// At agent boot the node is not ready yet: no node is considered, which
	// says nothing about the template.
	srv.SetUnplaceable(&api.AllocationMetric{})
	m := newManager(t, srv, fastFailures, Config{Name: "py", Size: 2, Max: 4})
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 instances waiting", func() bool { return len(srv.Dispatches()) == 2 })
	if e := m.Stats()["py"].Error; e != "" {
		t.Errorf("error %q while the node was not considered", e)
	}
	// The node is ready and the scheduler tries again: the constraint and
	// the memory fail it.
	srv.SetUnplaceable(&api.AllocationMetric{
		NodesEvaluated: 2, NodesFiltered: 2,
		ConstraintFiltered: map[string]int{
			"${attr.kernel.name} = windows":          1,
			"${node.unique.id} = " + pooltest.NodeID: 1, // the pool's own pin
		},
		DimensionExhausted: map[string]int{"memory": 1},
	})
	waitFor(t, 5*time.Second, "the pool failing", func() bool { return m.Stats()["py"].Error != "" })
	e := m.Stats()["py"].Error
	for _, want := range []string{"cannot be placed", `"${attr.kernel.name} = windows"`, "not enough memory"} {
		if !strings.Contains(e, want) {
			t.Errorf("error %q does not say %q", e, want)
		}
	}
	if strings.Contains(e, pooltest.NodeID) {
		t.Errorf("error %q blames the pool's own pin to the node", e)
	}
	if _, err := m.Claim(ctx(t, time.Minute), "py", Owner{}); !errors.Is(err, ErrFailing) {
		t.Fatalf("claim on an unplaceable pool: %v", err)
	}
	if n := len(srv.Dispatches()); n != 2 {
		t.Errorf("%d dispatches of an unplaceable template; want the 2 of size, left queued", n)
	}
	srv.SetUnplaceable(nil)
}
