// Command gotemplate renders a Go text/template the way Ollama renders a Modelfile TEMPLATE, for posttrain's
// export verification (Go template vs. the tokenizer's Jinja chat template, byte for byte).
//
// Input on stdin, one JSON object:
//
//	{"template": "<Go template text>", "cases": [{"Messages": [{"Role": "user", "Content": "hi"}], "System": ""}, ...]}
//
// Output on stdout, one JSON object: {"renders": [{"output": "...", "error": ""}, ...]}, one entry per case.
// A template that does not parse exits with status 2 and the parse error on stderr. Only text/template's
// built-in functions are available (the translator emits nothing else), and missing keys render as zero values
// (Ollama parses templates with Option("missingkey=zero")).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/template"
)

type request struct {
	Template string           `json:"template"`
	Cases    []map[string]any `json:"cases"`
}

type render struct {
	Output string `json:"output"`
	Error  string `json:"error"`
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: reading stdin:", err)
		os.Exit(2)
	}
	var req request
	if err := json.Unmarshal(input, &req); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: stdin is not a JSON request:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("modelfile").Option("missingkey=zero").Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: template does not parse:", err)
		os.Exit(2)
	}
	renders := make([]render, 0, len(req.Cases))
	for _, data := range req.Cases {
		var out bytes.Buffer
		r := render{}
		if err := tmpl.Execute(&out, data); err != nil {
			r.Error = err.Error()
		}
		r.Output = out.String()
		renders = append(renders, r)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(map[string]any{"renders": renders}); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: writing stdout:", err)
		os.Exit(2)
	}
}
