package hclspectest_test

import (
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/hclspec/hclspectest"
)

// pluginSchema is shaped like the agentkernel-pool plugin block.
func pluginSchema() *hclspec.Spec {
	return hclspec.NewObject(map[string]*hclspec.Spec{
		"address":    hclspec.NewAttr("address", "string", false),
		"token_file": hclspec.NewAttr("token_file", "string", false),
		"namespace": withDefault(
			hclspec.NewAttr("namespace", "string", false),
			literal(`"default"`),
		),
		"pool": hclspec.NewBlockMap("pool", []string{"name"}, hclspec.NewObject(map[string]*hclspec.Spec{
			"jobspec":       hclspec.NewAttr("jobspec", "string", true),
			"size":          withDefault(hclspec.NewAttr("size", "number", false), literal("1")),
			"claim_timeout": withDefault(hclspec.NewAttr("claim_timeout", "string", false), literal(`"30s"`)),
		})),
		"labels":  blockAttrs("labels", "string", false),
		"mount":   blockList("mount", hclspec.NewObject(map[string]*hclspec.Spec{"src": hclspec.NewAttr("", "string", true)})),
		"volume":  blockSet("volume", hclspec.NewObject(map[string]*hclspec.Spec{"name": hclspec.NewAttr("name", "string", true)})),
		"logging": block("logging", false, hclspec.NewObject(map[string]*hclspec.Spec{"level": hclspec.NewAttr("level", "string", false)})),
		"extra":   hclspec.NewAttr("extra", "any", false),
		"opts":    withDefault(hclspec.NewAttr("opts", "list(string)", false), literal("[]")),
		"limits":  hclspec.NewAttr("limits", `object({cpu = number, "mem-mb" = number, tags = map(string)})`, false),
		"pair":    hclspec.NewAttr("pair", "tuple([string, number])", false),
		"fixed":   array([]*hclspec.Spec{literal("1"), hclspec.NewAttr("fixed_b", "set(bool)", false)}),
		// Direct children of an Object take the key as their name.
		"implied": hclspec.NewAttr("", "bool", false),
	})
}

func TestValidateAcceptsFullSchema(t *testing.T) {
	if err := hclspectest.Validate(pluginSchema()); err != nil {
		t.Fatalf("valid schema rejected: %v", err)
	}
	if err := hclspectest.Validate(hclspec.NewObject(nil)); err != nil {
		t.Fatalf("empty object rejected: %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	obj := func(key string, s *hclspec.Spec) *hclspec.Spec {
		return hclspec.NewObject(map[string]*hclspec.Spec{key: s})
	}
	cases := []struct {
		name string
		spec *hclspec.Spec
		msg  string
	}{
		{"nil root", nil, "root must be an object"},
		{"attr root", hclspec.NewAttr("a", "string", false), "root must be an object, got attr"},
		{"empty spec", obj("x", &hclspec.Spec{}), "spec.x: spec sets no kind"},
		{"nil entry", obj("x", nil), "spec.x: nil spec"},
		{"unnamed attr in default", obj("x", withDefault(hclspec.NewAttr("", "string", false), literal("1"))),
			"spec.x.primary: attribute spec is missing a name"},
		{"unnamed attr in array", obj("x", array([]*hclspec.Spec{hclspec.NewAttr("", "string", false)})),
			"spec.x[0]: attribute spec is missing a name"},
		{"unnamed block in block nested", obj("x", block("x", false, blockList("", obj("a", hclspec.NewAttr("a", "string", false))))),
			"spec.x.nested: block_list spec is missing a name"},
		{"empty type", obj("x", hclspec.NewAttr("x", "", false)), "spec.x: attribute: empty type expression"},
		{"unknown type", obj("x", hclspec.NewAttr("x", "integer", false)), `unknown type "integer"`},
		{"unclosed type", obj("x", hclspec.NewAttr("x", "list(string", false)), `expected ')'`},
		{"trailing type", obj("x", hclspec.NewAttr("x", "string string", false)), "unexpected"},
		{"bad block attrs type", obj("x", blockAttrs("x", "map", false)), "spec.x: block_attrs"},
		{"any in block map", obj("x", hclspec.NewBlockMap("x", []string{"n"}, obj("v", hclspec.NewAttr("v", "any", false)))), "block_map nests an `any` type"},
		{"any in block set", obj("x", blockSet("x", obj("v", hclspec.NewAttr("v", "list(any)", false)))), "block_set nests an `any` type"},
		{"block map without labels", obj("x", hclspec.NewBlockMap("x", nil, hclspec.NewObject(nil))), "needs at least one label"},
		{"block map empty label", obj("x", hclspec.NewBlockMap("x", []string{""}, hclspec.NewObject(nil))), "label 0 is empty"},
		{"block without nested", obj("x", block("x", true, nil)), "spec.x: block spec has no nested spec"},
		{"block list without nested", obj("x", blockList("x", nil)), "block_list spec has no nested spec"},
		{"block set without nested", obj("x", blockSet("x", nil)), "block_set spec has no nested spec"},
		{"default without default", obj("x", withDefault(hclspec.NewAttr("x", "string", false), nil)), "default spec has no default spec"},
		{"empty literal", obj("x", withDefault(hclspec.NewAttr("x", "string", false), literal(""))), "spec.x.default: literal: empty value"},
		{"unbalanced literal", obj("x", literal("[1, 2")), `unclosed '['`},
		{"unterminated string literal", obj("x", literal(`"abc`)), "unterminated string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := hclspectest.Validate(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.msg)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	spec := hclspec.NewObject(map[string]*hclspec.Spec{
		"a": hclspec.NewAttr("a", "", false),
		"b": hclspec.NewBlockMap("b", nil, hclspec.NewObject(nil)),
	})
	err := hclspectest.Validate(spec)
	if err == nil || !strings.Contains(err.Error(), "spec.a:") || !strings.Contains(err.Error(), "spec.b:") {
		t.Fatalf("Validate = %v, want both problems", err)
	}
}

// Builders for the kinds of spec the driver does not use, to test Validate on them.

func block(name string, required bool, nested *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_BlockValue{BlockValue: &hclspec.Block{Name: name, Required: required, Nested: nested}}}
}

func blockAttrs(name, elemType string, required bool) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_BlockAttrs{BlockAttrs: &hclspec.BlockAttrs{Name: name, Type: elemType, Required: required}}}
}

func blockList(name string, nested *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_BlockList{BlockList: &hclspec.BlockList{Name: name, Nested: nested}}}
}

func blockSet(name string, nested *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_BlockSet{BlockSet: &hclspec.BlockSet{Name: name, Nested: nested}}}
}

func withDefault(primary, def *hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Default{Default: &hclspec.Default{Primary: primary, Default: def}}}
}

func literal(value string) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Literal{Literal: &hclspec.Literal{Value: value}}}
}

func array(values []*hclspec.Spec) *hclspec.Spec {
	return &hclspec.Spec{Block: &hclspec.Spec_Array{Array: &hclspec.Array{Values: values}}}
}
