// Runs every resource_customizations/<group>/<Kind>/health.lua against its
// health_test.yaml the way Argo CD does (util/lua/lua.go in argoproj/argo-cd):
// gopher-lua v1.1.2, the object as the global `obj`, a 1-second deadline,
// the returned table read as {status, message}. Each case runs twice: with
// every standard library open (Argo CD's built-in scripts) and with Argo
// CD's restricted set (package, base, table and an os with only time and
// date: scripts pasted into argocd-cm without useOpenLibs).
package argocd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type healthTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus healthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// Argo CD's health.HealthStatusCode values a script may return.
var validStatus = []string{"Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing"}

// safeOs is Argo CD's os subset: gopher-lua's own os.time and os.date.
func safeOs() map[string]lua.LGFunction {
	full := lua.NewState()
	defer full.Close()
	mod := full.GetGlobal("os").(*lua.LTable)
	funcs := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		funcs[name] = mod.RawGetString(name).(*lua.LFunction).GFunction
	}
	return funcs
}

func newState(openLibs bool) *lua.LState {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	osFuncs := safeOs()
	openSafeOs := func(l *lua.LState) int {
		l.Push(l.RegisterModule(lua.OsLibName, osFuncs))
		return 1
	}
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), osFuncs))
		return 1
	})
	return l
}

// toLua mirrors Argo CD's decodeValue.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func runHealth(t *testing.T, script string, obj map[string]any, openLibs bool) healthStatus {
	t.Helper()
	l := newState(openLibs)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		t.Fatalf("script failed: %v", err)
	}
	ret := l.Get(-1)
	if ret.Type() == lua.LTNil {
		return healthStatus{}
	}
	table, ok := ret.(*lua.LTable)
	if !ok {
		t.Fatalf("script returned %s, Argo CD expects a table", ret.Type())
	}
	var hs healthStatus
	table.ForEach(func(k, v lua.LValue) {
		s, isString := v.(lua.LString)
		switch k.String() {
		case "status", "message":
			// Argo CD decodes the table as JSON into strings: anything
			// else fails the health assessment.
			if !isString {
				t.Errorf("%s is a %s, not a string", k, v.Type())
			}
			if k.String() == "status" {
				hs.Status = string(s)
			} else {
				hs.Message = string(s)
			}
		default:
			t.Errorf("unexpected field %q in the returned table", k)
		}
	})
	if !slices.Contains(validStatus, hs.Status) {
		t.Errorf("status %q is not one Argo CD accepts (it would show Unknown)", hs.Status)
	}
	return hs
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func healthScripts(t *testing.T) []string {
	t.Helper()
	scripts, err := filepath.Glob("resource_customizations/*/*/health.lua")
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no health.lua found")
	}
	return scripts
}

func TestHealthChecks(t *testing.T) {
	for _, path := range healthScripts(t) {
		dir := filepath.Dir(path)
		script, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cases healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &cases)
		if len(cases.Tests) == 0 {
			t.Fatalf("%s: no tests", dir)
		}
		used := map[string]bool{}
		for _, c := range cases.Tests {
			used[filepath.Clean(c.InputPath)] = true
			if c.HealthStatus.Status == "" || c.HealthStatus.Message == "" {
				t.Errorf("%s/%s: every case states a status and a message", dir, c.InputPath)
			}
			var obj map[string]any
			readYAML(t, filepath.Join(dir, c.InputPath), &obj)
			for _, open := range []bool{true, false} {
				libs := "restricted-libs"
				if open {
					libs = "open-libs"
				}
				name := strings.TrimPrefix(dir, "resource_customizations/") + "/" + c.InputPath + "/" + libs
				t.Run(name, func(t *testing.T) {
					got := runHealth(t, string(script), obj, open)
					if got != c.HealthStatus {
						t.Errorf("got %+v, want %+v", got, c.HealthStatus)
					}
				})
			}
		}
		// Every captured object is a test case.
		files, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
		sort.Strings(files)
		for _, f := range files {
			rel, _ := filepath.Rel(dir, f)
			if !used[rel] {
				t.Errorf("%s: %s is not used by health_test.yaml", dir, rel)
			}
		}
	}
}

// The restricted set really is restricted: a script that needed the string
// library would fail in argocd-cm without useOpenLibs.
func TestRestrictedSetHasNoStringLibrary(t *testing.T) {
	l := newState(false)
	defer l.Close()
	if err := l.DoString(`assert(string == nil and io == nil and os.exit == nil and os.time() > 0)`); err != nil {
		t.Fatal(err)
	}
}

func readDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, part := range strings.Split(string(b), "\n---\n") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

func annotation(doc map[string]any, key string) string {
	meta, _ := doc["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	s, _ := ann[key].(string)
	return s
}

// The argocd-cm example carries every health.lua verbatim.
func TestArgoCDConfigMapExampleMatchesScripts(t *testing.T) {
	docs := readDocs(t, "../../examples/argocd/argocd-cm.yaml")
	data, _ := docs[0]["data"].(map[string]any)
	for _, path := range healthScripts(t) {
		script, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(filepath.ToSlash(path), "/")
		key := "resource.customizations.health." + parts[1] + "_" + parts[2]
		if data[key] != string(script) {
			t.Errorf("examples/argocd/argocd-cm.yaml: %s differs from %s", key, path)
		}
	}
}

// Secrets sync before the platform; the platform's kinds may not exist at
// dry-run time; both Applications apply server-side.
func TestArgoCDExampleOrdering(t *testing.T) {
	wave := func(doc map[string]any) string { return annotation(doc, "argocd.argoproj.io/sync-wave") }
	for _, s := range readDocs(t, "../../examples/argocd/platform/secrets.yaml") {
		if wave(s) != "-1" {
			t.Errorf("Secret in wave %q, want -1", wave(s))
		}
	}
	for _, d := range readDocs(t, "../../examples/argocd/platform/bookingplatform.yaml") {
		if wave(d) != "0" || annotation(d, "argocd.argoproj.io/sync-options") != "SkipDryRunOnMissingResource=true" {
			t.Errorf("%v: want wave 0 and SkipDryRunOnMissingResource=true", d["kind"])
		}
	}
	for _, app := range readDocs(t, "../../examples/argocd/applications.yaml") {
		spec, _ := app["spec"].(map[string]any)
		policy, _ := spec["syncPolicy"].(map[string]any)
		opts, _ := policy["syncOptions"].([]any)
		if !slices.Contains(opts, any("ServerSideApply=true")) {
			t.Errorf("Application %v: no ServerSideApply=true", app["metadata"])
		}
	}
}
