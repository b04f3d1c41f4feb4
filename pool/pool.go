package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

// ErrUnknownPool is returned (wrapped, with the pools this node has) by calls
// that name a pool the Manager was not configured with.
var ErrUnknownPool = errors.New("unknown pool")

// ErrStopped is returned (wrapped) by calls made after Stop.
var ErrStopped = errors.New("pool manager stopped")

// Manager keeps the pools of one node. Create it with New, then Start it;
// Stop it when done.
type Manager struct {
	client    *api.Client
	token     *nomadapi.Token
	nodeID    string
	node8     string
	namespace string
	log       hclog.Logger
	onChange  func()
	prepare   func(context.Context, WarmAlloc) error
	// checkReadyFn: Options.CheckReady
	checkReadyFn func(context.Context, WarmAlloc) (ReadyResult, error)
	discard      func(allocID string)
	observer     Observer
	// writeBehind: Options.WriteBehind
	writeBehind bool
	instance    string // this Manager's id, recorded on what it dispatches
	pools       map[string]*pool
	names       []string // sorted pool names

	mu       sync.Mutex
	inv      inventory
	changed  chan struct{} // closed and replaced whenever the inventory changes
	lastSent map[string]Stats
	watchErr map[string]error // per watcher, nil when current
	node     *api.Node        // this node, for template defaults; may be nil
	started  bool
	stopped  bool // no new goroutines once set
	// claimCache holds claim records read or written, by path: records
	// never change, so a copy is good until the record is deleted.
	claimCache map[string]*claimRecord
	// freeing holds the allocations of superseded claims being freed.
	freeing map[string]bool

	startTimeout   time.Duration
	inUseGrace     time.Duration
	reconcileEvery time.Duration
	now            func() time.Time // the clock of the demand targets (demand.go)
	failureWatch   time.Duration    // see failureWatchLoop

	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	kick       chan struct{} // wakes the replenisher
	notify     chan struct{} // wakes the OnChange notifier
	readyKick  chan struct{} // wakes the readiness loop
	dispatchSL chan struct{} // bounds concurrent dispatches and purges
}

// pool is one configured pool; every field below cfg is guarded by Manager.mu.
type pool struct {
	cfg   Config
	jobID string

	tmpl     *warmTemplate // what is registered; nil until it is
	err      error         // config or template problem; see Stats.Error
	inflight int           // dispatch calls not yet answered
	expected map[string]uint64
	waiters  int
	prepFail int // Prepare failures since start (Stats.PrepareFailures)
	// readyFail counts allocations replaced for readiness since start
	// (Stats.ReadyFailures).
	readyFail int
	// readyErr says why the last allocation was replaced for readiness,
	// until one turns warm (resetFailures): Stats.Error shows it at once,
	// since a ready_timeout may be minutes long, while claims still wait
	// until the pool is failing (failure.go).
	readyErr string
	// failures counts template failures in a row (failure.go); failReason
	// is Nomad's reason for the last; unplaced holds starting instances the
	// scheduler cannot place, by job ID; denied is set while Prepare is
	// refused for the token's lack of a right (prepare.go).
	failures    int
	failReason  string
	denied      string // what the token lacks to prepare warm allocations
	unplaced    map[string]unplaced
	failureBase time.Duration
	retryAt     time.Time
	// quietUntil holds back the replacement of a claimed allocation for a
	// moment (postClaimQuiet), while the claimer starts its task.
	quietUntil time.Time
	lastErr    error
	view       poolView
	demand     *demand // claim rate and warm-up time (demand.go)
	target     int     // demand's last answer
}

// New validates opts and returns a Manager that is not yet running. Problems
// with a single pool do not fail New: that pool reports them from Start,
// Stats and Claim, and the other pools work.
func New(opts Options) (*Manager, error) {
	if opts.Client == nil {
		return nil, errors.New("create pool manager: no nomad api client")
	}
	if len(opts.NodeID) < 8 {
		return nil, fmt.Errorf("create pool manager: node id %q is not a nomad node id", opts.NodeID)
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	m := &Manager{
		client:       opts.Client,
		token:        opts.Token,
		nodeID:       opts.NodeID,
		node8:        opts.NodeID[:8],
		namespace:    opts.Namespace,
		log:          opts.Logger,
		onChange:     opts.OnChange,
		prepare:      opts.Prepare,
		checkReadyFn: opts.CheckReady,
		discard:      opts.Discard,
		observer:     opts.Observer,
		writeBehind:  opts.WriteBehind,
		instance:     hex.EncodeToString(id),
		pools:        map[string]*pool{},
		changed:      make(chan struct{}),
		lastSent:     map[string]Stats{},
		watchErr:     map[string]error{},
		kick:         make(chan struct{}, 1),
		notify:       make(chan struct{}, 1),
		readyKick:    make(chan struct{}, 1),
		dispatchSL:   make(chan struct{}, 8),
		claimCache:   map[string]*claimRecord{},
		freeing:      map[string]bool{},

		now:            time.Now,
		startTimeout:   defaultStartTimeout,
		inUseGrace:     inUseGrace,
		reconcileEvery: defaultReconcileEvery,
		failureWatch:   failureWatchEvery,
	}
	m.inv = newInventory()
	for _, c := range opts.Pools {
		if _, dup := m.pools[c.Name]; dup {
			return nil, fmt.Errorf("create pool manager: pool %q is configured twice", c.Name)
		}
		p := &pool{cfg: c, jobID: ParentJobID(c.Name, opts.NodeID), expected: map[string]uint64{},
			unplaced: map[string]unplaced{}, failureBase: failureBase}
		p.err = validateConfig(c)
		if p.cfg.ClaimTimeout <= 0 {
			p.cfg.ClaimTimeout = DefaultClaimTimeout
		}
		p.initDemand()
		m.pools[c.Name] = p
		m.names = append(m.names, c.Name)
	}
	slices.Sort(m.names)
	return m, nil
}

// ParentJobID is the ID of the warm template job of pool on node.
func ParentJobID(pool, nodeID string) string {
	return "agentkernel-pool-" + pool + "-" + nodeID[:min(8, len(nodeID))]
}

// Start registers the warm templates, reads the inventory and starts the
// watch, replenish and reconcile loops. The returned error names every pool
// that cannot work and why; the Manager runs anyway, the other pools work,
// and Stop must still be called.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("start pool manager: already started")
	}
	m.started = true
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.mu.Unlock()

	m.log.Info("starting pool manager", "node_id", m.nodeID, "namespace", m.namespace, "pools", strings.Join(m.names, ","))
	nodeErr := m.loadNode(ctx)
	if nodeErr != nil {
		m.log.Warn("cannot read this node yet; warm templates get its datacenter and node pool once it can be read", "error", nodeErr)
	}
	var errs []error
	for _, name := range m.names {
		if err := m.ensureTemplate(ctx, m.pools[name], true); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.checkAccess(ctx); err != nil {
		errs = append(errs, err)
	}
	indexes, err := m.syncInventory(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	m.goFn(func() { m.watchJobs(indexes.jobs) })
	m.goFn(func() { m.watchAllocs(indexes.allocs) })
	m.goFn(func() { m.watchClaims(indexes.claims) })
	m.goFn(m.replenishLoop)
	m.goFn(m.reconcileLoop)
	if nodeErr != nil {
		m.goFn(m.nodeLoop)
	}
	if m.onChange != nil {
		m.goFn(m.notifyLoop)
	}
	if m.prepare != nil {
		m.goFn(m.prepareLoop)
	}
	m.goFn(m.readyLoop)
	m.goFn(m.failureWatchLoop)
	m.kickReplenish()
	return errors.Join(errs...)
}

// Stop stops every goroutine the Manager started and waits for them. Warm
// allocations stay: a restarted Manager adopts them.
func (m *Manager) Stop() {
	m.mu.Lock()
	cancel := m.cancel
	m.stopped = true
	m.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	m.wg.Wait()
}

// Health returns nil while the inventory is current, else an error saying
// which watch of the Nomad API is failing.
func (m *Manager) Health() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, name := range []string{"jobs", "allocations", "claims"} {
		if err := m.watchErr[name]; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lookup returns the named pool or an ErrUnknownPool error listing the pools.
func (m *Manager) lookup(name string) (*pool, error) {
	if p, ok := m.pools[name]; ok {
		return p, nil
	}
	quoted := make([]string, len(m.names))
	for i, n := range m.names {
		quoted[i] = strconv.Quote(n)
	}
	has := "no pools"
	if len(quoted) > 0 {
		has = "pools " + strings.Join(quoted, ", ")
	}
	return nil, fmt.Errorf("%w %q: this node has %s", ErrUnknownPool, name, has)
}

// running returns the Manager's context, or an error before Start or after Stop.
func (m *Manager) running() (context.Context, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return nil, errors.New("pool manager not started")
	}
	if m.ctx.Err() != nil {
		return nil, ErrStopped
	}
	return m.ctx, nil
}

// goFn runs fn in a goroutine that Stop waits for. After Stop it runs
// nothing: what fn would have done is left to the next Manager's reconcile.
func (m *Manager) goFn(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.goFnLocked(fn)
}

// goFnLocked is goFn for a caller that holds m.mu.
func (m *Manager) goFnLocked(fn func()) {
	if m.stopped {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		fn()
	}()
}

func (m *Manager) kickReplenish() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// notifyLoop calls OnChange, coalescing bursts of changes into one call.
func (m *Manager) notifyLoop() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.notify:
			m.onChange()
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
