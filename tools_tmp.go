//go:build tools

// Temporary: keeps the chosen dependencies in go.mod until code imports them.
package main

import (
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/hashicorp/go-version"
	_ "github.com/hashicorp/nomad/api"
	_ "github.com/vmihailenco/msgpack/v5"
	_ "github.com/zclconf/go-cty/cty"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
