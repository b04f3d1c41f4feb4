package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// DeviceAPIVersion is the only device plugin API version Nomad clients speak
// (1.10 to 2.0.x).
const DeviceAPIVersion = "v0.1.0"

// Device is what a device plugin implements; ServeDevice adapts it to Nomad's
// BasePlugin and DevicePlugin services. No generated protobuf type appears
// here. Nomad never tells a device plugin that a reservation ended, and it
// has no Init or Shutdown call for device plugins: the process is killed.
type Device interface {
	// Base: a bad config belongs in the devices Fingerprint sends (none, or
	// unhealthy ones), not in SetConfig's error.
	Base
	// Fingerprint sends the plugin's complete device set: once at once (an
	// empty set is fine), then whenever it changes, until ctx is done; the
	// channel is closed when ctx is done. Nomad re-registers the node (5 to
	// 10 s later) only when a set differs from the one before.
	Fingerprint(ctx context.Context) (<-chan []DeviceGroup, error)
	// Reserve says what a task given the instances ids needs. It may come
	// first in a process Nomad relaunched, before any Fingerprint; it has no
	// deadline of Nomad's, so it must answer fast.
	Reserve(ctx context.Context, ids []string) (*Reservation, error)
}

// DeviceGroup is one vendor/type/name (a jobspec asks for
// "<vendor>/<type>/<name>") and its instances.
type DeviceGroup struct {
	Vendor    string
	Type      string
	Name      string
	Instances []DeviceInstance
	// Attributes are the group's; they are part of the node's computed
	// class, so they must not change often. Values as in Fingerprint.
	Attributes map[string]any
}

// DeviceInstance is one instance of a device group; the scheduler gives
// healthy instances to one allocation at a time.
type DeviceInstance struct {
	ID                string
	Healthy           bool
	HealthDescription string
}

// Reservation is what a task given some instances gets: env vars only (the
// protocol's mounts and device nodes are not used by any plugin here).
type Reservation struct {
	Env map[string]string
}

// ValidateDeviceGroups checks a device set as the Nomad client will: a set it
// refuses makes it drop the plugin until the agent restarts, so the server
// never sends one. Every group needs a vendor, a type and a name (no '/' in
// vendor or type: jobspecs split on it), every instance an ID unique across
// the whole set, every attribute a name. Attribute values carry no unit, so
// any value passes (one Fingerprint would render with %v).
func ValidateDeviceGroups(groups []DeviceGroup) error {
	var errs []error
	ids := map[string]string{}
	seen := map[string]bool{}
	for i, g := range groups {
		name := fmt.Sprintf("device group %d (%s/%s/%s)", i, g.Vendor, g.Type, g.Name)
		switch {
		case g.Vendor == "" || g.Type == "" || g.Name == "":
			errs = append(errs, fmt.Errorf("%s: vendor, type and name must all be set", name))
		case strings.Contains(g.Vendor, "/") || strings.Contains(g.Type, "/"):
			errs = append(errs, fmt.Errorf("%s: vendor and type must not contain '/'", name))
		}
		key := g.Vendor + "/" + g.Type + "/" + g.Name
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: listed twice", name))
		}
		seen[key] = true
		for _, in := range g.Instances {
			switch {
			case in.ID == "":
				errs = append(errs, fmt.Errorf("%s: an instance has no ID", name))
			case ids[in.ID] != "":
				errs = append(errs, fmt.Errorf("%s: instance %q is also in %s", name, in.ID, ids[in.ID]))
			default:
				ids[in.ID] = key
			}
		}
		if _, ok := g.Attributes[""]; ok {
			errs = append(errs, fmt.Errorf("%s: an attribute has no name", name))
		}
	}
	return errors.Join(errs...)
}
