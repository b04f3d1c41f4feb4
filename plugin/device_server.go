package plugin

import (
	"context"
	"reflect"
	"slices"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/device"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

// deviceServer serves hashicorp.nomad.plugins.device.DevicePlugin.
//
// Two rules of the Nomad client shape it: a Fingerprint stream that ends, or
// carries a set the client refuses, makes the client drop the plugin until
// the agent restarts; and a Stats stream that ends stops statistics for good.
// So Fingerprint sends only valid sets (an invalid one is logged and skipped)
// and holds the stream open until the client goes; Stats sends nothing and
// holds its stream open, which the client reads as "no statistics" (sandbox
// instances have none to give).
type deviceServer struct {
	device.UnimplementedDevicePluginServer
	d      Device
	logger hclog.Logger
}

func (s *deviceServer) Fingerprint(_ *device.FingerprintRequest, stream device.DevicePlugin_FingerprintServer) error {
	ctx := stream.Context()
	ch, err := s.d.Fingerprint(ctx)
	if err != nil {
		return toStatus(err)
	}
	out := &sender[*device.FingerprintResponse]{send: stream.Send}
	defer out.close()
	var last []DeviceGroup
	for {
		select {
		case <-ctx.Done():
			// The client went: say why, as its own end would. A nil here
			// ends the stream as finished, which reaches a client whose own
			// deadline has not fired yet as a clean end of fingerprinting.
			return status.FromContextError(ctx.Err()).Err()
		case groups, ok := <-ch:
			if !ok {
				ch = nil // a nil channel blocks: hold the stream open (see above)
				continue
			}
			if err := ValidateDeviceGroups(groups); err != nil {
				s.logger.Error("device set not sent: the client would drop the plugin", "error", err)
				continue
			}
			if last != nil && slices.EqualFunc(groups, last, groupEqual) {
				continue // an unchanged set would only cost the client a comparison
			}
			if err := out.Send(deviceGroupsToProto(groups)); err != nil {
				return err
			}
			last = groups
		}
	}
}

func (s *deviceServer) Reserve(ctx context.Context, req *device.ReserveRequest) (*device.ReserveResponse, error) {
	ids := req.GetDeviceIds()
	if len(ids) == 0 {
		return nil, status.Error(codes.InvalidArgument, "reserve: no device ids")
	}
	r, err := s.d.Reserve(ctx, ids)
	if err != nil {
		return nil, toStatus(err)
	}
	// container_res must always be set: the client dereferences it.
	res := &device.ContainerReservation{}
	if r != nil && len(r.Env) > 0 {
		res.Envs = r.Env
	}
	return &device.ReserveResponse{ContainerRes: res}, nil
}

func (s *deviceServer) Stats(_ *device.StatsRequest, stream device.DevicePlugin_StatsServer) error {
	<-stream.Context().Done()
	return status.FromContextError(stream.Context().Err()).Err() // the client's reason, as in Fingerprint
}

func deviceGroupsToProto(groups []DeviceGroup) *device.FingerprintResponse {
	out := &device.FingerprintResponse{DeviceGroup: make([]*device.DeviceGroup, 0, len(groups))}
	for _, g := range groups {
		pg := &device.DeviceGroup{
			Vendor: g.Vendor, DeviceType: g.Type, DeviceName: g.Name,
			Devices: make([]*device.DetectedDevice, 0, len(g.Instances)),
		}
		for _, in := range g.Instances {
			pg.Devices = append(pg.Devices, &device.DetectedDevice{Id: in.ID, Healthy: in.Healthy, HealthDescription: in.HealthDescription})
		}
		if len(g.Attributes) > 0 {
			pg.Attributes = make(map[string]*structs.Attribute, len(g.Attributes))
			for k, v := range g.Attributes {
				pg.Attributes[k] = attributeToProto(v)
			}
		}
		out.DeviceGroup = append(out.DeviceGroup, pg)
	}
	return out
}

func groupEqual(a, b DeviceGroup) bool {
	return a.Vendor == b.Vendor && a.Type == b.Type && a.Name == b.Name && slices.Equal(a.Instances, b.Instances) &&
		reflect.DeepEqual(a.Attributes, b.Attributes)
}
