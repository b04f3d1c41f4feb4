package driver

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool"
)

// Serves reports whether tasks of namespace ns may use the named pool.
func (c *Config) Serves(poolName, ns string) bool {
	allowed, limited := c.Namespaces[poolName]
	return !limited || slices.Contains(allowed, ns)
}

// PoolNames lists the configured pools, sorted.
func (c *Config) PoolNames() []string {
	names := make([]string, 0, len(c.Pools))
	for _, p := range c.Pools {
		names = append(names, p.Name)
	}
	return names
}

// Pool returns the named pool's config.
func (c *Config) Pool(name string) (pool.Config, bool) {
	for _, p := range c.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return pool.Config{}, false
}

// parseConfig validates a decoded plugin block. It returns every problem it finds,
// each naming the field (and the pool), so one look at the driver's health
// description tells the operator all that is wrong.
func parseConfig(raw *rawConfig) (*Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	api, err := raw.Block.Config()
	if err != nil {
		errs = append(errs, err)
	}
	c := &Config{API: api, Namespace: raw.Namespace}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.MetricsAddress = strings.TrimSpace(raw.MetricsAddr); c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			bad("metrics_address %q: want host:port such as 127.0.0.1:9464: %v", c.MetricsAddress, err)
		}
	}

	names := make([]string, 0, len(raw.Pools))
	for n := range raw.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		bad(`no pool configured: add a pool "<name>" { jobspec = "..." } block`)
	}
	for _, name := range names {
		p, perrs := parsePool(name, raw.Pools[name])
		nss, nerrs := parseNamespaces(name, raw.Pools[name].Namespaces)
		perrs = append(perrs, nerrs...)
		dev, derr := parseDevice(name, raw.Pools[name].Device)
		if derr != nil {
			perrs = append(perrs, derr)
		}
		errs = append(errs, perrs...)
		if len(perrs) == 0 {
			c.Pools = append(c.Pools, p)
			if len(nss) > 0 {
				if c.Namespaces == nil {
					c.Namespaces = map[string][]string{}
				}
				c.Namespaces[name] = nss
			}
			if dev {
				if c.Devices == nil {
					c.Devices = map[string]bool{}
				}
				c.Devices[name] = true
			}
		}
	}
	return c, errors.Join(errs...)
}

func parsePool(name string, raw rawPool) (pool.Config, []error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("pool %q: "+format, append([]any{name}, args...)...))
	}
	p := pool.Config{Name: name, Jobspec: raw.Jobspec}
	if err := pool.CheckName(name); err != nil {
		errs = append(errs, err) // the pool core owns what a pool may be called
	}
	if raw.Jobspec == "" {
		bad("jobspec: missing; set the path of the warm sandbox jobspec")
	} else if f, err := os.Open(raw.Jobspec); err != nil {
		bad("jobspec: %v", err)
	} else {
		f.Close()
	}

	size, sizeErr := wholeNumber(raw.Size, DefaultPoolSize)
	if sizeErr != nil {
		bad("size: %v", sizeErr)
	}
	p.Size = size
	// max_warm defaults to size: a fixed pool, as before it existed.
	maxWarm, warmErr := wholeNumber(raw.MaxWarm, size)
	if warmErr != nil {
		bad("max_warm: %v", warmErr)
		maxWarm = size
	}
	p.MaxWarm = maxWarm
	defMax := max(maxWarm*maxPerSize, minDefaultMax)
	mx, err := wholeNumber(raw.Max, defMax)
	if err != nil {
		bad("max: %v", err)
	}
	p.Max = mx
	if err == nil && mx < 1 {
		bad("max (%d) must be at least 1", mx)
	} else if err == nil && size > mx {
		bad("size (%d) must not exceed max (%d)", size, mx)
	} else if err == nil && sizeErr == nil && warmErr == nil && maxWarm < size {
		bad("max_warm (%d) must be at least size (%d)", maxWarm, size)
	} else if err == nil && warmErr == nil && maxWarm > mx {
		bad("max_warm (%d) must not exceed max (%d)", maxWarm, mx)
	}

	p.ClaimTimeout, err = duration(raw.ClaimTimeout, DefaultClaimTimeout)
	if err != nil {
		bad("claim_timeout: %v", err)
	}
	p.ScaleDownAfter, err = duration(raw.ScaleDown, pool.DefaultScaleDownAfter)
	if err != nil {
		bad("scale_down_after: %v", err)
	}
	p.ReadyTimeout, err = duration(raw.ReadyTimeout, pool.DefaultReadyTimeout)
	if err != nil {
		bad("ready_timeout: %v", err)
	}
	return p, errs
}

// namespaceRE is what Nomad accepts as a namespace name.
var namespaceRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,128}$`)

// parseNamespaces validates a pool's namespaces list: Nomad namespace names,
// each once. Empty means every namespace.
func parseNamespaces(pool string, raw []string) ([]string, []error) {
	var errs []error
	var out []string
	for _, ns := range raw {
		switch {
		case !namespaceRE.MatchString(ns):
			errs = append(errs, fmt.Errorf("pool %q: namespaces: %q is not a Nomad namespace name (1-128 of a-z, A-Z, 0-9 and -)", pool, ns))
		case slices.Contains(out, ns):
			errs = append(errs, fmt.Errorf("pool %q: namespaces: %q is listed twice", pool, ns))
		default:
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out, errs
}

// parseDevice reads a pool's device option: true or false (HCL hands over
// `device = true` as "true"); empty means false.
func parseDevice(pool, v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("pool %q: device: %q: want true or false", pool, v)
	}
	return b, nil
}

// wholeNumber reads a non-negative integer given as a numeric string (HCL hands
// over `size = 3` as "3"); empty means def.
func wholeNumber(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", v)
	}
	if f != math.Trunc(f) || f < 0 || f > 100000 {
		return 0, fmt.Errorf("%v: want a whole number from 0 to 100000", f)
	}
	return int(f), nil
}

// duration reads a Go duration string ("30s") or a number of seconds (HCL hands
// over `claim_timeout = 30` as "30"); empty means def.
func duration(v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	x := strings.TrimSpace(v)
	var d time.Duration
	if secs, err := strconv.ParseFloat(x, 64); err == nil {
		d = time.Duration(secs * float64(time.Second))
	} else if d, err = time.ParseDuration(x); err != nil {
		return 0, fmt.Errorf("%q: want a duration such as \"30s\" or \"2m\"", x)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%s: must be positive", d)
	}
	return d, nil
}
