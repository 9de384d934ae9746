package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// errorEventResponse is a watch response that carries one ERROR event with
// the given Status and then ends, byte for byte what kube-apiserver sends
// when a watch's resourceVersion is too old.
func errorEventResponse(req *http.Request, code int, reason, message string) *http.Response {
	ev := map[string]any{
		"type": "ERROR",
		"object": map[string]any{
			"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
			"status": "Failure", "message": message, "reason": reason, "code": code,
		},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	b = append(b, '\n')
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": []string{"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       req,
	}
}
