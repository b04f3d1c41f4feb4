// Command agentkernel-pool is a Nomad task driver plugin that runs sandbox tasks
// in pre-warmed allocations. Launched by Nomad it serves the plugin protocol
// (with the argument "device", the device plugin of package device); run by
// hand it is a small CLI (status, version).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/device"
	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

func main() {
	if plugin.LaunchedByNomad() {
		if len(os.Args) > 1 && os.Args[1] == device.Arg {
			// The same binary under a second plugin_dir name (README, Cluster).
			logger := plugin.NewLogger(device.Name)
			plugin.ServeDevice(device.New(logger, driver.Version), logger)
			return
		}
		logger := plugin.NewLogger(driver.Name)
		d := driver.New(logger, nil)
		// SIGUSR1 logs what the plugin knows of every task (Driver.LogState),
		// for whoever asks why a task has not ended.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				d.LogState()
			}
		}()
		plugin.Serve(d, logger)
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: agentkernel-pool <command>

A Nomad task driver plugin: Nomad launches this binary from its plugin_dir.
Commands for people:
  status    print every node's warm pools, and why any fails (uses NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...)
  version   print the plugin version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case shipper.ShipCommand, shipper.HoldCommand:
		return shipper.Main(args, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "%s %s\n", driver.Name, driver.Version)
		return 0
	case "status":
		return status(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return 2
}

func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("namespace", driver.DefaultNamespace, "namespace of the warm jobs")
	addr := fs.String("address", "", "Nomad API address (default NOMAD_ADDR, else http://127.0.0.1:4646)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for the Nomad API calls")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	client, err := nomadapi.NewClient(nomadapi.Config{
		Address: *addr, CAFile: os.Getenv("NOMAD_CACERT"), CertFile: os.Getenv("NOMAD_CLIENT_CERT"),
		KeyFile: os.Getenv("NOMAD_CLIENT_KEY"), TLSServerName: os.Getenv("NOMAD_TLS_SERVER_NAME"),
	})
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := pool.Status(ctx, client, *ns)
	if err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return 1
	}
	if err := pool.PrintStatus(stdout, st); err != nil {
		fmt.Fprintf(stderr, "status: %v\n", err)
		return 1
	}
	return 0
}
