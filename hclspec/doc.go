// Package hclspec holds the HCL schema messages a Nomad plugin returns from
// ConfigSchema and TaskConfigSchema (generated from proto/hclspec/hcl_spec.proto)
// and builders for the kinds the driver uses. Package hclspectest checks a
// schema the way the Nomad client does, for tests.
package hclspec
