package hclspec_test

import (
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/hclspec"
)

// pluginSchema is shaped like the agentkernel-pool plugin block.
func pluginSchema() *hclspec.Spec {
	return hclspec.NewObject(map[string]*hclspec.Spec{
		"address":    hclspec.NewAttr("address", "string", false),
		"token_file": hclspec.NewAttr("token_file", "string", false),
		"namespace": hclspec.NewDefault(
			hclspec.NewAttr("namespace", "string", false),
			hclspec.NewLiteral(`"default"`),
		),
		"pool": hclspec.NewBlockMap("pool", []string{"name"}, hclspec.NewObject(map[string]*hclspec.Spec{
			"jobspec":       hclspec.NewAttr("jobspec", "string", true),
			"size":          hclspec.NewDefault(hclspec.NewAttr("size", "number", false), hclspec.NewLiteral("1")),
			"claim_timeout": hclspec.NewDefault(hclspec.NewAttr("claim_timeout", "string", false), hclspec.NewLiteral(`"30s"`)),
		})),
		"labels":  hclspec.NewBlockAttrs("labels", "string", false),
		"mount":   hclspec.NewBlockList("mount", hclspec.NewObject(map[string]*hclspec.Spec{"src": hclspec.NewAttr("", "string", true)})),
		"volume":  hclspec.NewBlockSet("volume", hclspec.NewObject(map[string]*hclspec.Spec{"name": hclspec.NewAttr("name", "string", true)})),
		"logging": hclspec.NewBlock("logging", false, hclspec.NewObject(map[string]*hclspec.Spec{"level": hclspec.NewAttr("level", "string", false)})),
		"extra":   hclspec.NewAttr("extra", "any", false),
		"opts":    hclspec.NewDefault(hclspec.NewAttr("opts", "list(string)", false), hclspec.NewLiteral("[]")),
		"limits":  hclspec.NewAttr("limits", `object({cpu = number, "mem-mb" = number, tags = map(string)})`, false),
		"pair":    hclspec.NewAttr("pair", "tuple([string, number])", false),
		"fixed":   hclspec.NewArray([]*hclspec.Spec{hclspec.NewLiteral("1"), hclspec.NewAttr("fixed_b", "set(bool)", false)}),
		// Direct children of an Object take the key as their name.
		"implied": hclspec.NewAttr("", "bool", false),
	})
}

func TestValidateAcceptsFullSchema(t *testing.T) {
	if err := hclspec.Validate(pluginSchema()); err != nil {
		t.Fatalf("valid schema rejected: %v", err)
	}
	if err := hclspec.Validate(hclspec.NewObject(nil)); err != nil {
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
		{"unnamed attr in default", obj("x", hclspec.NewDefault(hclspec.NewAttr("", "string", false), hclspec.NewLiteral("1"))),
			"spec.x.primary: attribute spec is missing a name"},
		{"unnamed attr in array", obj("x", hclspec.NewArray([]*hclspec.Spec{hclspec.NewAttr("", "string", false)})),
			"spec.x[0]: attribute spec is missing a name"},
		{"unnamed block in block nested", obj("x", hclspec.NewBlock("x", false, hclspec.NewBlockList("", obj("a", hclspec.NewAttr("a", "string", false))))),
			"spec.x.nested: block_list spec is missing a name"},
		{"empty type", obj("x", hclspec.NewAttr("x", "", false)), "spec.x: attribute: empty type expression"},
		{"unknown type", obj("x", hclspec.NewAttr("x", "integer", false)), `unknown type "integer"`},
		{"unclosed type", obj("x", hclspec.NewAttr("x", "list(string", false)), `expected ')'`},
		{"trailing type", obj("x", hclspec.NewAttr("x", "string string", false)), "unexpected"},
		{"bad block attrs type", obj("x", hclspec.NewBlockAttrs("x", "map", false)), "spec.x: block_attrs"},
		{"any in block map", obj("x", hclspec.NewBlockMap("x", []string{"n"}, obj("v", hclspec.NewAttr("v", "any", false)))), "block_map nests an `any` type"},
		{"any in block set", obj("x", hclspec.NewBlockSet("x", obj("v", hclspec.NewAttr("v", "list(any)", false)))), "block_set nests an `any` type"},
		{"block map without labels", obj("x", hclspec.NewBlockMap("x", nil, hclspec.NewObject(nil))), "needs at least one label"},
		{"block map empty label", obj("x", hclspec.NewBlockMap("x", []string{""}, hclspec.NewObject(nil))), "label 0 is empty"},
		{"block without nested", obj("x", hclspec.NewBlock("x", true, nil)), "spec.x: block spec has no nested spec"},
		{"block list without nested", obj("x", hclspec.NewBlockList("x", nil)), "block_list spec has no nested spec"},
		{"block set without nested", obj("x", hclspec.NewBlockSet("x", nil)), "block_set spec has no nested spec"},
		{"default without default", obj("x", hclspec.NewDefault(hclspec.NewAttr("x", "string", false), nil)), "default spec has no default spec"},
		{"empty literal", obj("x", hclspec.NewDefault(hclspec.NewAttr("x", "string", false), hclspec.NewLiteral(""))), "spec.x.default: literal: empty value"},
		{"unbalanced literal", obj("x", hclspec.NewLiteral("[1, 2")), `unclosed '['`},
		{"unterminated string literal", obj("x", hclspec.NewLiteral(`"abc`)), "unterminated string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := hclspec.Validate(tc.spec)
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
	err := hclspec.Validate(spec)
	if err == nil || !strings.Contains(err.Error(), "spec.a:") || !strings.Contains(err.Error(), "spec.b:") {
		t.Fatalf("Validate = %v, want both problems", err)
	}
}

func TestBuildersSetTheirKind(t *testing.T) {
	nested := hclspec.NewObject(nil)
	if b := hclspec.NewBlockMap("pool", []string{"name"}, nested).GetBlockMap(); b.GetName() != "pool" || b.GetLabels()[0] != "name" || b.GetNested() != nested {
		t.Fatalf("block map = %v", b)
	}
	if a := hclspec.NewAttr("size", "number", true).GetAttr(); a.GetName() != "size" || a.GetType() != "number" || !a.GetRequired() {
		t.Fatalf("attr = %v", a)
	}
	if d := hclspec.NewDefault(hclspec.NewAttr("x", "bool", false), hclspec.NewLiteral("true")).GetDefault(); d.GetDefault().GetLiteral().GetValue() != "true" {
		t.Fatalf("default = %v", d)
	}
	if b := hclspec.NewBlockAttrs("labels", "string", false).GetBlockAttrs(); b.GetType() != "string" {
		t.Fatalf("block attrs = %v", b)
	}
}
