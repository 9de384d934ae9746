package leasehold

// Every ```go block of README.md and docs/*.md compiles. The convention:
//
//   - A block that starts with "package " is a whole file (a program, as the
//     README's Usage) and is built as it is, in a directory of its own.
//   - Any other block is a fragment: the statements of a function body. It
//     is placed in `func _() error { <block>; return nil }`, alone in a
//     package of its own, so it may `return err`. Variables it declares at
//     its top level (:= or var) may stay unused: each gets a `_ = name`.
//   - A fragment may begin with an import block (shown to the reader, as in
//     docs/controller-runtime.md); it goes to the top of the file. Any other
//     package the fragment uses is imported by the name it is used under,
//     from docsImports (ctrl for controller-runtime, corev1, fence, ...).
//   - A fragment may use the names of docsPrelude without declaring them:
//     ctx, clientset, client, cfg, id, lock, elector, mgr, r and queue stand
//     for what the program around it would have.
//
// The blocks are built with one `go build` in a temporary module that
// requires what the examples module requires (its go.mod, with the replace
// directives pointing at this checkout, and the go.sum of the modules it
// replaces), with GOFLAGS=-mod=mod and GOTOOLCHAIN=local: offline once the
// module cache holds the examples module's dependencies, as after make test.
// Compiler errors name the Markdown file and line (//line directives).
// Blocks tagged otherwise (sh, text, yaml) are not read; a block with no
// tag at all fails TestDocsCodeBlocksAreTagged.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docsImports maps the names fragments use for packages to their paths.
var docsImports = map[string]string{
	"context":           "context",
	"errors":            "errors",
	"fmt":               "fmt",
	"os":                "os",
	"time":              "time",
	"leasehold":         "github.com/leasehold/leasehold",
	"leaseholdtest":     "github.com/leasehold/leasehold/leaseholdtest",
	"fence":             "github.com/leasehold/leasehold/fence",
	"shard":             "github.com/leasehold/leasehold/shard",
	"controllerruntime": "github.com/leasehold/leasehold/controllerruntime",
	"leaseholdprom":     "github.com/leasehold/leasehold/metrics/prometheus",
	"corev1":            "k8s.io/api/core/v1",
	"appsv1":            "k8s.io/api/apps/v1",
	"metav1":            "k8s.io/apimachinery/pkg/apis/meta/v1",
	"kubernetes":        "k8s.io/client-go/kubernetes",
	"klog":              "k8s.io/klog/v2",
	"ctrl":              "sigs.k8s.io/controller-runtime",
	"builder":           "sigs.k8s.io/controller-runtime/pkg/builder",
	"crmetrics":         "sigs.k8s.io/controller-runtime/pkg/metrics",
}

// docsPrelude is in every fragment's package: what the program around a
// fragment would have declared.
const docsPrelude = `package snippet

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
)

var (
	ctx       context.Context
	clientset *kubernetes.Clientset
	client    kubernetes.Interface
	cfg       *rest.Config // the manager's
	id        string       // leasehold.DefaultIdentity()
	lock      *leasehold.LeaseLock
	elector   *leasehold.Elector
	mgr       manager.Manager
	r         reconcile.Reconciler
)

// workItem and queue stand for a controller's work queue.
type workItem struct{ Desired *appsv1.Deployment }

func queue(context.Context) <-chan workItem { return nil }
`

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	file string // relative to the repository root
	line int    // of the block's first line of code
	lang string
	code string
}

// docFiles are the Markdown files whose Go blocks must compile.
func docFiles(t *testing.T) []string {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, files...)
}

// docBlocks returns the fenced blocks of file, in order.
func docBlocks(t *testing.T, file string) []docBlock {
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var cur *docBlock
	var code []string
	for i, line := range strings.Split(string(src), "\n") {
		if !strings.HasPrefix(line, "```") {
			if cur != nil {
				code = append(code, line)
			}
			continue
		}
		if cur == nil {
			cur = &docBlock{file: file, line: i + 2, lang: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
			code = nil
			continue
		}
		cur.code = strings.Join(code, "\n") + "\n"
		blocks = append(blocks, *cur)
		cur = nil
	}
	if cur != nil {
		t.Fatalf("%s:%d: code block never closed", file, cur.line-1)
	}
	return blocks
}

func TestDocsCodeBlocksAreTagged(t *testing.T) {
	for _, f := range docFiles(t) {
		for _, b := range docBlocks(t, f) {
			if b.lang == "" {
				t.Errorf("%s:%d: code block without a language: tag it go, sh, text or yaml", b.file, b.line-1)
			}
		}
	}
}

func TestDocsGoBlocksCompile(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeDocsModule(t, root, dir)

	n := 0
	where := map[string]string{} // package directory -> file:line, for the failure message
	for _, f := range docFiles(t) {
		for _, b := range docBlocks(t, f) {
			if b.lang != "go" {
				continue
			}
			n++
			pkg := fmt.Sprintf("block%02d_%s", n, strings.NewReplacer("/", "_", ".", "_", "-", "_").Replace(b.file))
			where[pkg] = fmt.Sprintf("%s:%d", b.file, b.line)
			pdir := filepath.Join(dir, pkg)
			if err := os.Mkdir(pdir, 0o755); err != nil {
				t.Fatal(err)
			}
			abs := filepath.Join(root, b.file)
			if strings.HasPrefix(b.code, "package ") {
				writeDocFile(t, filepath.Join(pdir, "main.go"), fmt.Sprintf("//line %s:%d\n%s", abs, b.line, b.code))
				continue
			}
			writeDocFile(t, filepath.Join(pdir, "prelude.go"), docsPrelude)
			src, err := wrapFragment(abs, b.line, b.code)
			if err != nil {
				t.Errorf("%s:%d: %v", b.file, b.line, err)
				continue
			}
			writeDocFile(t, filepath.Join(pdir, "snippet.go"), src)
		}
	}
	if n < 8 {
		t.Fatalf("found %d Go blocks in README.md and docs/*.md; expected at least 8", n)
	}
	if t.Failed() {
		return
	}

	cmd := exec.Command(goBin, "build", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod "+os.Getenv("GOFLAGS"), "GOTOOLCHAIN=local", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var hint []string
		for pkg, at := range where {
			if strings.Contains(string(out), pkg) {
				hint = append(hint, pkg+" is the block at "+at)
			}
		}
		slices.Sort(hint)
		t.Fatalf("the Go blocks of the docs do not compile (convention: top of docs_test.go):\n%s\n%s", out, strings.Join(hint, "\n"))
	}
	t.Logf("compiled %d Go blocks", n)
}

// writeDocsModule writes go.mod and go.sum of the module the blocks are
// built in: the examples module's requirements, plus metrics/prometheus,
// with every replace directive pointing into root.
func writeDocsModule(t *testing.T, root, dir string) {
	mod, err := os.ReadFile(filepath.Join(root, "examples", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, line := range strings.Split(string(mod), "\n") {
		switch {
		case strings.HasPrefix(line, "module "):
			line = "module leasehold.invalid/docsnippets"
		case strings.HasPrefix(line, "replace ") && strings.Contains(line, "=> ../"):
			i := strings.Index(line, "=> ")
			line = line[:i+3] + filepath.Join(root, "examples", strings.TrimSpace(line[i+3:]))
		}
		b.WriteString(line + "\n")
	}
	b.WriteString("\nrequire github.com/leasehold/leasehold/metrics/prometheus v0.1.0\n")
	writeDocFile(t, filepath.Join(dir, "go.mod"), b.String())

	seen := map[string]bool{}
	var sum strings.Builder
	for _, m := range []string{"examples", "controllerruntime", "metrics/prometheus", "."} {
		s, err := os.ReadFile(filepath.Join(root, m, "go.sum"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(s), "\n") {
			if line != "" && !seen[line] {
				seen[line] = true
				sum.WriteString(line + "\n")
			}
		}
	}
	writeDocFile(t, filepath.Join(dir, "go.sum"), sum.String())
}

// wrapFragment makes a fragment a file of package snippet, by the
// convention at the top of this file. file and line are where the
// fragment's code starts, for the //line directive.
func wrapFragment(file string, line int, code string) (string, error) {
	var imports string
	if strings.HasPrefix(code, "import") {
		end := strings.Index(code, "\n)\n")
		if !strings.HasPrefix(code, "import (") || end < 0 {
			return "", fmt.Errorf("a fragment's import block must be `import (...)`")
		}
		imports = code[:end+3]
		line += strings.Count(imports, "\n")
		code = code[end+3:]
	}
	body := fmt.Sprintf("func _() error {\n//line %s:%d\n%s\n", file, line, code)

	// Parse once to learn what the fragment declares and which names it
	// leaves unresolved: those are packages to import, or the prelude's.
	f, err := parser.ParseFile(token.NewFileSet(), "snippet.go", "package snippet\n"+imports+"\n"+body+"return nil\n}\n", parser.ParseComments)
	if err != nil {
		return "", err
	}
	imported := map[string]bool{}
	for _, s := range f.Imports {
		path, _ := strconv.Unquote(s.Path.Value)
		name := path[strings.LastIndex(path, "/")+1:]
		if s.Name != nil {
			name = s.Name.Name
		} else if regexp.MustCompile(`^v[0-9]+$`).MatchString(name) {
			name = strings.TrimSuffix(path[:strings.LastIndex(path, "/")], "/")
			name = name[strings.LastIndex(name, "/")+1:]
		}
		imported[name] = true
	}
	var extra []string
	for _, id := range f.Unresolved {
		if path, ok := docsImports[id.Name]; ok && !imported[id.Name] {
			imported[id.Name] = true
			extra = append(extra, fmt.Sprintf("import %s %q\n", id.Name, path))
		}
	}
	slices.Sort(extra)

	var unused []string
	fn := f.Decls[len(f.Decls)-1].(*ast.FuncDecl)
	for _, s := range fn.Body.List {
		switch s := s.(type) {
		case *ast.AssignStmt:
			if s.Tok == token.DEFINE {
				for _, e := range s.Lhs {
					if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
						unused = append(unused, id.Name)
					}
				}
			}
		case *ast.DeclStmt:
			if g, ok := s.Decl.(*ast.GenDecl); ok && g.Tok == token.VAR {
				for _, spec := range g.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						if id.Name != "_" {
							unused = append(unused, id.Name)
						}
					}
				}
			}
		}
	}
	var tail strings.Builder
	tail.WriteString("//line snippet.go:1\n")
	for _, name := range slices.Compact(slices.Sorted(slices.Values(unused))) {
		tail.WriteString("_ = " + name + "\n")
	}
	tail.WriteString("return nil\n}\n")
	return "package snippet\n\n" + imports + strings.Join(extra, "") + "\n" + body + tail.String(), nil
}

func writeDocFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
