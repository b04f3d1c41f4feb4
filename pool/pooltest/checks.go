package pooltest

import (
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// SetCheckResults sets what the client's check results of allocations
// (/v1/client/allocation/<id>/checks) answer: fn's statuses for the
// allocation; nil answers an empty set, as Nomad does for an allocation
// without checks. fn runs under the Server's lock: it must not call the
// Server.
func (s *Server) SetCheckResults(fn func(allocID string) api.AllocCheckStatuses) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkResults = fn
}

// CheckResult is one check's status as Nomad reports it ("success",
// "failure", "pending") with its output.
func CheckResult(service, check, status, output string) api.AllocCheckStatus {
	return api.AllocCheckStatus{ID: service + "-" + check, Service: service, Check: check, Mode: "healthiness",
		Status: status, Output: output, Timestamp: time.Now().Unix()}
}

// allocChecks answers /v1/client/allocation/<id>/checks; the caller holds s.mu.
func (s *Server) allocChecks(rest string) (int, any, bool) {
	id, ok := strings.CutSuffix(rest, "/checks")
	if !ok {
		return 0, nil, false
	}
	if s.allocs[id] == nil {
		return http.StatusNotFound, "Unknown allocation \"" + id + "\"", true
	}
	res := api.AllocCheckStatuses{}
	if s.checkResults != nil {
		res = s.checkResults(id)
	}
	return http.StatusOK, res, true
}
