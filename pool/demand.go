package pool

import (
	"fmt"
	"math"
	"time"
)

// Demand-driven warm target (ARCHITECTURE.md, "The warm target follows
// demand"). A pool keeps warm what the claims expected during one warm-up
// need: claims arrive at about rate λ, a replacement dispatched at a claim
// is warm W later, so about λ·W claims arrive before it is there (Little's
// law). Arrivals are bursty (Poisson: the spread of a count with mean n is
// √n), so the pool keeps λ·W + k·√(λ·W), clamped to [size, max_warm].
// The rate rises fast (an exponentially decaying count, time constant
// rateTau) and the target falls slowly: it is the highest value wanted over
// the last scale_down_after, so a lull shorter than that drops nothing.

const (
	// rateTau is the time constant of the claim rate estimate: a step in
	// the rate shows 63% of itself after rateTau.
	rateTau = 5 * time.Second
	// burstMargin is k in λ·W + k·√(λ·W): about 98% of Poisson bursts
	// during one warm-up fit in what is kept warm.
	burstMargin = 2.0
	// warmupWeight is the weight of a new warm-up sample in the estimate.
	warmupWeight = 0.3
	// defaultWarmup stands for W until the pool measured one of its own.
	defaultWarmup = 5 * time.Second
)

// demand learns one pool's claim rate and warm-up time and derives its warm
// target. It is not safe for concurrent use (the Manager's mu guards it) and
// reads no clock: every call says what time it is.
type demand struct {
	size, maxWarm int
	hold          time.Duration // scale_down_after

	rate    float64   // claims per second, as of rateSet
	rateSet time.Time // zero until the first claim
	warmup  time.Duration
	// peaks holds (time, wanted) samples of the last hold, wanted strictly
	// decreasing: its first entry is the highest value wanted since then.
	peaks []peakSample
}

type peakSample struct {
	at   time.Time
	want int
}

// validateDemand checks a pool's max_warm against its size and max.
func validateDemand(c Config) error {
	switch {
	case c.MaxWarm != 0 && c.MaxWarm < c.Size:
		return fmt.Errorf("pool %q: max_warm %d is less than size %d", c.Name, c.MaxWarm, c.Size)
	case c.MaxWarm > c.Max:
		return fmt.Errorf("pool %q: max_warm %d is more than max %d", c.Name, c.MaxWarm, c.Max)
	}
	return nil
}

// initDemand applies the demand defaults to p's config and starts its
// target at size.
func (p *pool) initDemand() {
	if p.cfg.MaxWarm == 0 {
		p.cfg.MaxWarm = p.cfg.Size
	}
	if p.cfg.ScaleDownAfter <= 0 {
		p.cfg.ScaleDownAfter = DefaultScaleDownAfter
	}
	p.demand = newDemand(p.cfg.Size, p.cfg.MaxWarm, p.cfg.ScaleDownAfter)
	p.target = p.cfg.Size
}

func newDemand(size, maxWarm int, hold time.Duration) *demand {
	maxWarm = max(maxWarm, size)
	if hold <= 0 {
		hold = DefaultScaleDownAfter
	}
	return &demand{size: size, maxWarm: maxWarm, hold: hold}
}

// claimed records one claim (a task start asking the pool) at now.
func (d *demand) claimed(now time.Time) {
	d.rate = d.rateNow(now) + 1/rateTau.Seconds()
	d.rateSet = now
	d.target(now) // the peak is right after a claim: hold it
}

// warmedUp records the time one of the pool's instances took from its
// dispatch to warm.
func (d *demand) warmedUp(took time.Duration) {
	if took <= 0 {
		return
	}
	if d.warmup == 0 {
		d.warmup = took
		return
	}
	d.warmup = time.Duration(warmupWeight*float64(took) + (1-warmupWeight)*float64(d.warmup))
}

// rateNow is the claim rate estimate at now (claims per second).
func (d *demand) rateNow(now time.Time) float64 {
	if d.rateSet.IsZero() || d.rate == 0 {
		return 0
	}
	dt := now.Sub(d.rateSet).Seconds()
	if dt <= 0 {
		return d.rate
	}
	return d.rate * math.Exp(-dt/rateTau.Seconds())
}

// warmupTime is the warm-up estimate: measured, or defaultWarmup before any.
func (d *demand) warmupTime() time.Duration {
	if d.warmup == 0 {
		return defaultWarmup
	}
	return d.warmup
}

// wanted is what the demand at now calls for, within [size, max_warm].
func (d *demand) wanted(now time.Time) int {
	if d.maxWarm == d.size {
		return d.size
	}
	n := d.rateNow(now) * d.warmupTime().Seconds() // λ·W
	want := int(math.Ceil(n + burstMargin*math.Sqrt(n) - 1e-9))
	return min(max(want, d.size), d.maxWarm)
}

// target updates the target at now and returns it, with the time it may
// fall next (zero when it cannot fall: nothing higher is held).
func (d *demand) target(now time.Time) (int, time.Time) {
	w := d.wanted(now)
	for len(d.peaks) > 0 && d.peaks[len(d.peaks)-1].want <= w {
		d.peaks = d.peaks[:len(d.peaks)-1]
	}
	d.peaks = append(d.peaks, peakSample{at: now, want: w})
	for len(d.peaks) > 1 && !now.Before(d.peaks[0].at.Add(d.hold)) {
		d.peaks = d.peaks[1:]
	}
	if len(d.peaks) == 1 {
		return w, time.Time{}
	}
	return d.peaks[0].want, d.peaks[0].at.Add(d.hold)
}
