package pool

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The demand tests drive the warm target with a fake clock: every call says
// what time it is, nothing sleeps.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// claimsAt records claims every gap from start until end and returns end.
func claimsAt(d *demand, start, end time.Time, gap time.Duration) time.Time {
	for at := start; at.Before(end); at = at.Add(gap) {
		d.claimed(at)
	}
	return end
}

func TestFixedPoolKeepsSize(t *testing.T) {
	d := newDemand(2, 2, time.Minute) // max_warm defaults to size
	d.warmedUp(3 * time.Second)
	now := claimsAt(d, t0, t0.Add(30*time.Second), 100*time.Millisecond) // 10 claims/s
	if got, _ := d.target(now); got != 2 {
		t.Fatalf("fixed pool (max_warm = size) target %d under 10 claims/s, want 2", got)
	}
}

func TestIdlePoolKeepsSize(t *testing.T) {
	d := newDemand(3, 12, time.Minute)
	if got, next := d.target(t0); got != 3 || !next.IsZero() {
		t.Fatalf("idle target %d (next fall %v), want 3 and nothing to fall", got, next)
	}
}

func TestStepInClaimRateRaisesTargetWithinOneWarmup(t *testing.T) {
	const size, maxWarm = 2, 12
	warmup := 3 * time.Second
	d := newDemand(size, maxWarm, 5*time.Minute)
	d.warmedUp(warmup)

	// 0.2 claims/s for a minute: about what size covers.
	now := claimsAt(d, t0, t0.Add(time.Minute), 5*time.Second)
	low, _ := d.target(now)
	if low > size+1 {
		t.Fatalf("target %d at 0.2 claims/s with a %s warm-up, want at most %d", low, warmup, size+1)
	}

	// Then 2 claims/s: after one warm-up the pool keeps at least what one
	// warm-up of the new rate brings (2/s × 3 s = 6).
	now = claimsAt(d, now, now.Add(warmup), 500*time.Millisecond)
	high, _ := d.target(now)
	if high < 6 {
		t.Fatalf("target %d one warm-up after a step to 2 claims/s (from %d), want at least 6", high, low)
	}

	// Held at 2/s it goes on to cover the Poisson spread too, within max_warm.
	now = claimsAt(d, now, now.Add(time.Minute), 500*time.Millisecond)
	if got, _ := d.target(now); got < 10 || got > maxWarm {
		t.Fatalf("target %d after a minute at 2 claims/s, want 10..%d", got, maxWarm)
	}
}

func TestLongerWarmupKeepsMoreWarm(t *testing.T) {
	fast, slow := newDemand(1, 20, time.Minute), newDemand(1, 20, time.Minute)
	fast.warmedUp(time.Second)
	slow.warmedUp(6 * time.Second)
	claimsAt(fast, t0, t0.Add(30*time.Second), time.Second)
	now := claimsAt(slow, t0, t0.Add(30*time.Second), time.Second)
	f, _ := fast.target(now)
	s, _ := slow.target(now)
	if s <= f {
		t.Fatalf("at 1 claim/s: target %d with a 6 s warm-up, %d with 1 s; want more for the slower warm-up", s, f)
	}
}

func TestDropLowersTargetOnlyAfterScaleDownAfter(t *testing.T) {
	const size = 2
	hold := 5 * time.Minute
	d := newDemand(size, 12, hold)
	d.warmedUp(3 * time.Second)
	end := claimsAt(d, t0, t0.Add(2*time.Minute), 500*time.Millisecond)
	last := end.Add(-500 * time.Millisecond) // the last claim
	high, next := d.target(end)
	if high <= size {
		t.Fatalf("target %d at 2 claims/s, want above size", high)
	}
	if next.IsZero() || next.After(last.Add(hold)) {
		t.Fatalf("next fall at %v, want by %v", next, last.Add(hold))
	}

	// Idle: held until scale_down_after has passed since the last claim...
	for now := end; now.Before(last.Add(hold)); now = now.Add(10 * time.Second) {
		if got, _ := d.target(now); got != high {
			t.Fatalf("target %d after %s idle, want %d held until %s", got, now.Sub(last), high, hold)
		}
	}
	// ...then back to size within a minute more.
	var got int
	for now := last.Add(hold); !now.After(last.Add(hold + time.Minute)); now = now.Add(10 * time.Second) {
		got, next = d.target(now)
	}
	if got != size || !next.IsZero() {
		t.Fatalf("target %d (next fall %v) after %s idle, want size %d and nothing left to fall", got, next, hold+time.Minute, size)
	}
}

func TestShortLullKeepsTarget(t *testing.T) {
	hold := time.Minute
	d := newDemand(1, 10, hold)
	d.warmedUp(2 * time.Second)
	now := claimsAt(d, t0, t0.Add(time.Minute), 250*time.Millisecond)
	high, _ := d.target(now)
	now = now.Add(hold / 2) // a lull shorter than scale_down_after
	if got, _ := d.target(now); got != high {
		t.Fatalf("target %d after a %s lull, want %d", got, hold/2, high)
	}
	now = claimsAt(d, now, now.Add(20*time.Second), 250*time.Millisecond) // demand is back
	if got, _ := d.target(now.Add(hold - time.Second)); got != high {
		t.Fatalf("target %d %s after demand came back, want %d: returned demand renews the hold", got, hold-time.Second, high)
	}
}

func TestTargetStaysWithinSizeAndMaxWarm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		size := r.IntN(4)
		maxWarm := size + r.IntN(10)
		d := newDemand(size, maxWarm, time.Duration(1+r.IntN(600))*time.Second)
		now := t0
		for range 500 {
			now = now.Add(time.Duration(r.ExpFloat64() * float64(time.Duration(1+r.IntN(5000))*time.Millisecond)))
			switch r.IntN(3) {
			case 0:
				d.claimed(now)
			case 1:
				d.warmedUp(time.Duration(r.IntN(120_000)) * time.Millisecond)
			}
			if got, _ := d.target(now); got < size || got > maxWarm {
				t.Fatalf("round %d: target %d outside [size %d, max_warm %d]", round, got, size, maxWarm)
			}
		}
	}
}
