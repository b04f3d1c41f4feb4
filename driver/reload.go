package driver

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// reloadLoop reads the plugin config again every reloadEvery, so that a token
// written to token_file (a rotation, or a token_file that did not exist yet)
// takes effect without an agent restart. The config's own text cannot change
// without one; only the files it names can. A new token is a new value for
// the next API call (see nomadapi.Token): nothing is rebuilt for it. The backend
// is built only when a config that was broken now parses cleanly; a file that
// is briefly missing never tears down working pools.
func (d *Driver) reloadLoop() {
	t := time.NewTicker(d.reloadEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.reload()
	}
}

func (d *Driver) reload() {
	// The files are read without the lock, which StartTask needs: a slow
	// filesystem must not hold up starts.
	d.mu.Lock()
	rawBytes := d.rawConfig
	d.mu.Unlock()
	var raw rawConfig
	if rawBytes == nil || plugin.DecodeConfig(rawBytes, &raw) != nil {
		return
	}
	cfg, err := parseConfig(&raw)
	if err != nil {
		return
	}
	files := filesState(&raw, cfg)
	d.mu.Lock()
	defer d.mu.Unlock()
	if !bytes.Equal(rawBytes, d.rawConfig) {
		return // SetConfig came in meanwhile
	}
	switch {
	case d.cfgErr != nil && files != d.reloadFiles:
		d.logger.Info("the files the plugin config names changed and it is valid now; starting the pools")
		d.reloadFiles = files
		d.cfg, d.cfgErr = cfg, nil
		d.token.Set(cfg.API.Token)
		d.restartBackendLocked()
	case d.cfgErr == nil && cfg.API.Token != d.token.Secret():
		d.logger.Info("token_file holds a new token; the next nomad api calls use it", "token_file", raw.TokenFile)
		d.token.Set(cfg.API.Token)
	}
}

// filesState sums up the files a config names (size and time of each), so a
// rebuild that failed is tried again only once one of them changed.
func filesState(raw *rawConfig, cfg *Config) string {
	paths := raw.Block.Files()
	for _, p := range cfg.Pools {
		paths = append(paths, p.Jobspec)
	}
	var b strings.Builder
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s %d %d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}
