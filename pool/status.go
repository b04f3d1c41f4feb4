package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
)

// NodePoolStatus is one pool on one node, as Nomad shows it.
type NodePoolStatus struct {
	NodeID   string
	NodeName string
	Pool     string
	// Stats.Target and Stats.Error are read from the node's driver
	// attributes (nodeattr.Target, nodeattr.Error); Error is the driver's
	// health description while the driver on the node is unhealthy.
	Stats
	// HasTarget says Stats.Target was read from the node's attribute
	// (nodeattr.Target); false when the node does not publish it or the
	// token may not read nodes.
	HasTarget bool
}

// Status reads every node's pools in namespace from the Nomad API: the
// template jobs, their dispatched children, live allocations and claims.
// It is what `agentkernel-pool status` prints.
func Status(ctx context.Context, c *api.Client, namespace string) ([]NodePoolStatus, error) {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	var (
		jobs   []*api.JobListStub
		allocs []*api.AllocationListStub
		vars   []*api.VariableMetadata
	)
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		q := queryOpts(ctx, namespace)
		q.Prefix = jobPrefix
		var err error
		jobs, _, err = c.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}}, q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pool status: list pool jobs in namespace %q: %w", namespace, err)
	}
	err = call(ctx, retryAttempts, func(ctx context.Context) error {
		q := queryOpts(ctx, namespace)
		q.Filter = fmt.Sprintf(`JobID matches "^%s" and (ClientStatus == "pending" or ClientStatus == "running" or ClientStatus == "unknown")`, jobPrefix)
		var err error
		allocs, _, err = c.Allocations().List(q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pool status: list pool allocations in namespace %q: %w", namespace, err)
	}
	err = call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		vars, _, err = c.Variables().PrefixList(claimRoot, queryOpts(ctx, namespace))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pool status: list claim records in namespace %q: %w", namespace, err)
	}
	st := buildStatus(jobs, allocs, vars)
	// The target follows each node's demand, which only the plugin on that
	// node knows: it is read from the attribute the plugin publishes. A
	// token without node read gets the rest of the status.
	var nodes []*api.NodeListStub
	err = call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		nodes, _, err = c.Nodes().List(queryOpts(ctx, ""))
		return err
	})
	if err == nil {
		st = addNodeAttrs(st, nodes)
	}
	return st, nil
}

// addNodeAttrs fills in each row's node name, and its target and error from
// its node's driver attributes, and adds the pools a node publishes that have no template job
// (one that never registered: its error says why).
func addNodeAttrs(st []NodePoolStatus, nodes []*api.NodeListStub) []NodePoolStatus {
	byID := make(map[string]*api.NodeListStub, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	type key struct{ node, pool string }
	seen := map[key]bool{}
	for i := range st {
		seen[key{st[i].NodeID, st[i].Pool}] = true
		n := byID[st[i].NodeID]
		if n == nil {
			continue
		}
		if st[i].NodeName == "" {
			st[i].NodeName = n.Name
		}
		if d := n.Drivers[nodeattr.Driver]; d != nil {
			fillFromDriver(&st[i], d)
		}
	}
	for _, n := range nodes {
		d := n.Drivers[nodeattr.Driver]
		if d == nil {
			continue
		}
		for attr := range d.Attributes {
			name, f, ours := nodeattr.ParsePool(attr)
			if !ours || f != nodeattr.Size || seen[key{n.ID, name}] {
				continue
			}
			seen[key{n.ID, name}] = true
			r := NodePoolStatus{NodeID: n.ID, NodeName: n.Name, Pool: name}
			r.Size, _ = strconv.Atoi(d.Attributes[attr])
			r.Max, _ = strconv.Atoi(d.Attributes[nodeattr.Pool(name, nodeattr.Max)])
			fillFromDriver(&r, d)
			st = append(st, r)
		}
	}
	sortStatus(st)
	return st
}

// fillFromDriver sets a row's target and error from the driver on its node.
// An unhealthy driver publishes no pool attributes (those there are from
// before), so its health description is the row's error.
func fillFromDriver(r *NodePoolStatus, d *api.DriverInfo) {
	switch {
	case !d.Detected:
		r.Error = "driver not detected on this node"
		return
	case !d.Healthy:
		r.Error = "driver unhealthy: " + cmp.Or(d.HealthDescription, "no description")
		return
	}
	if t, err := strconv.Atoi(d.Attributes[nodeattr.Pool(r.Pool, nodeattr.Target)]); err == nil {
		r.Target, r.HasTarget = t, true
	}
	// Nomad's lists show a running sandbox, not whether it passed its
	// readiness check: only the plugin knows that.
	if n, err := strconv.Atoi(d.Attributes[nodeattr.Pool(r.Pool, nodeattr.Preparing)]); err == nil && n > 0 {
		r.Preparing = min(n, r.Warm)
		r.Warm -= r.Preparing
	}
	r.Error = d.Attributes[nodeattr.Pool(r.Pool, nodeattr.Error)]
}

func buildStatus(jobs []*api.JobListStub, allocs []*api.AllocationListStub, vars []*api.VariableMetadata) []NodePoolStatus {
	byJob := map[string][]*api.AllocationListStub{}
	for _, a := range allocs {
		if isLive(a) {
			byJob[a.JobID] = append(byJob[a.JobID], a)
		}
	}
	claims := map[string]claimRef{}
	for _, v := range vars {
		if pool, allocID, ok := parseClaimPath(v.Path); ok {
			claims[allocID] = claimRef{pool: pool, path: v.Path, index: v.ModifyIndex}
		}
	}
	type key struct{ node, pool string }
	rows := map[key]*NodePoolStatus{}
	row := func(node, node8, pool string) *NodePoolStatus {
		if node == "" {
			node = node8
		}
		k := key{node, pool}
		if rows[k] == nil {
			rows[k] = &NodePoolStatus{NodeID: node, Pool: pool}
		}
		return rows[k]
	}
	for _, j := range jobs {
		pool, node8, child, ok := parseJobID(j.ID)
		if !ok {
			continue
		}
		if p := j.Meta[metaPool]; p != "" {
			pool = p
		}
		r := row(j.Meta[metaNode], node8, pool)
		if r.NodeName == "" {
			r.NodeName = j.Meta[metaNodeName]
		}
		if !child {
			r.Size, _ = strconv.Atoi(j.Meta[metaSize])
			r.Max, _ = strconv.Atoi(j.Meta[metaMax])
			continue
		}
		switch classify(j, byJob[j.ID], claims).state {
		case stateStarting:
			r.Starting++
		case stateWarm:
			r.Warm++
		case stateClaimed:
			r.Claimed++
		case stateFailed:
			r.Failed++
		}
	}
	out := make([]NodePoolStatus, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sortStatus(out)
	return out
}

func sortStatus(st []NodePoolStatus) {
	slices.SortFunc(st, func(a, b NodePoolStatus) int {
		return cmp.Or(cmp.Compare(a.NodeName, b.NodeName), cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.Pool, b.Pool))
	})
}

// PrintStatus writes st as a table: node, pool, size, target ("-" when not
// known), max, warm, preparing, starting, claimed, failed; then, under "Pool errors:",
// why each failing pool fails.
func PrintStatus(w io.Writer, st []NodePoolStatus) error {
	if len(st) == 0 {
		_, err := fmt.Fprintln(w, "No agentkernel-pool pools found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	_, err := fmt.Fprintln(tw, "NODE\tPOOL\tSIZE\tTARGET\tMAX\tWARM\tPREPARING\tSTARTING\tCLAIMED\tFAILED")
	failing := false
	for _, s := range st {
		target := "-"
		if s.HasTarget {
			target = strconv.Itoa(s.Target)
		}
		_, e := fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", s.node(), s.Pool, s.Size, target, s.Max, s.Warm, s.Preparing, s.Starting, s.Claimed, s.Failed)
		err = errors.Join(err, e)
		failing = failing || s.Error != ""
	}
	err = errors.Join(err, tw.Flush())
	if !failing {
		return err
	}
	_, e := fmt.Fprint(w, "\nPool errors:\n")
	err = errors.Join(err, e)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, s := range st {
		if s.Error != "" {
			// One line each: a joined error's newlines would break the list.
			_, e := fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.node(), s.Pool, strings.Join(strings.Fields(s.Error), " "))
			err = errors.Join(err, e)
		}
	}
	return errors.Join(err, tw.Flush())
}

// node is how the table names the row's node: its name, else its ID's prefix.
func (s NodePoolStatus) node() string {
	if s.NodeName != "" {
		return s.NodeName
	}
	return s.NodeID[:min(8, len(s.NodeID))]
}
