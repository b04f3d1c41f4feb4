// Package hclspec holds the HCL schema messages a Nomad plugin returns from
// ConfigSchema and TaskConfigSchema (generated from proto/hclspec/hcl_spec.proto),
// builders for them, and Validate, which checks a schema the way the Nomad client
// does before the client ever sees it.
package hclspec
