package nomadapi

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/agentkernel/agentkernel-pool/hclspec"
)

// Block is the part of a plugin block that says how to reach the Nomad API,
// as Nomad encodes it. The driver's block and the device plugin's share it:
// each embeds Block in its raw config (plugin.DecodeConfig decodes its keys
// beside the block's own), merges BlockSpec into its schema, and gets its
// Config from Block.Config, so both accept and refuse the same values.
type Block struct {
	Address       string `codec:"address"`
	TokenFile     string `codec:"token_file"`
	CAFile        string `codec:"ca_file"`
	CertFile      string `codec:"cert_file"`
	KeyFile       string `codec:"key_file"`
	TLSServerName string `codec:"tls_server_name"`
}

// BlockSpec returns the schema attributes of a plugin block that embeds
// Block: Block's attributes and those of attrs. An attribute of attrs with
// the name of one of Block's is a mistake in the plugin: it panics, when
// the plugin's schema is built.
func BlockSpec(attrs map[string]*hclspec.Spec) map[string]*hclspec.Spec {
	spec := map[string]*hclspec.Spec{}
	for _, name := range []string{"address", "token_file", "ca_file", "cert_file", "key_file", "tls_server_name"} {
		spec[name] = hclspec.NewAttr(name, "string", false)
	}
	for name, s := range attrs {
		if _, ok := spec[name]; ok {
			panic("nomadapi.BlockSpec: " + name + " is a connection attribute already")
		}
		spec[name] = s
	}
	return spec
}

// Config validates the block and returns how to reach the API. It reports
// every problem, joined, each starting with the attribute it is about: an
// address that is not a URL, a token_file that cannot be read (ReadTokenFile),
// a ca_file, cert_file or key_file that does not exist, a cert_file without
// key_file or the reverse. The address is trimmed; paths are taken as written,
// like every path in a plugin block. The files are read on each call, so a
// caller that calls again sees a rotated token. The Config holds what could be
// read even when err is not nil.
func (b Block) Config() (Config, error) {
	var errs []error
	c := Config{
		Address:       strings.TrimSpace(b.Address),
		CAFile:        b.CAFile,
		CertFile:      b.CertFile,
		KeyFile:       b.KeyFile,
		TLSServerName: b.TLSServerName,
	}
	if c.Address != "" {
		if u, err := url.Parse(c.Address); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("address %q: want a URL such as %s", c.Address, DefaultAddress))
		}
	}
	if b.TokenFile != "" {
		tok, err := ReadTokenFile(b.TokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("token_file: %w", err))
		}
		c.Token = tok
	}
	for _, f := range []struct{ name, path string }{{"ca_file", b.CAFile}, {"cert_file", b.CertFile}, {"key_file", b.KeyFile}} {
		if f.path == "" {
			continue
		}
		// These are the operator's host files, named in the agent config:
		// no sandbox can write there, so a plain Stat is the check.
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	if (b.CertFile == "") != (b.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file: set both or neither"))
	}
	return c, errors.Join(errs...)
}

// Files lists the host files the block names (token, CA, certificate, key),
// for a caller that watches them for changes; an attribute not set is "".
func (b Block) Files() []string {
	return []string{b.TokenFile, b.CAFile, b.CertFile, b.KeyFile}
}
