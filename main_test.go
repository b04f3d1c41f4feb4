package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/driver"
)

func TestCLI(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"version"}, 0, driver.Name + " " + driver.Version, ""},
		{[]string{"help"}, 0, "status", ""},
		{nil, 2, "", "Usage:"},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"status", "-address", "http://127.0.0.1:1", "-timeout", "2s"}, 1, "", "status: "},
		{[]string{"status", "-bogus"}, 2, "", "flag provided but not defined"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: code %d stdout %q stderr %q; want code %d, stdout with %q, stderr with %q",
				tc.args, code, out.String(), errb.String(), tc.code, tc.out, tc.err)
		}
	}
}
