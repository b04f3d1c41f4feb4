package hclspec_test

import (
	"testing"

	"github.com/agentkernel/agentkernel-pool/hclspec"
)

func TestBuildersSetTheirKind(t *testing.T) {
	nested := hclspec.NewObject(nil)
	if b := hclspec.NewBlockMap("pool", []string{"name"}, nested).GetBlockMap(); b.GetName() != "pool" || b.GetLabels()[0] != "name" || b.GetNested() != nested {
		t.Fatalf("block map = %v", b)
	}
	if a := hclspec.NewAttr("size", "number", true).GetAttr(); a.GetName() != "size" || a.GetType() != "number" || !a.GetRequired() {
		t.Fatalf("attr = %v", a)
	}
}
