// Command ociimage wraps one static binary into an OCI image layout tar that
// `ctr images import` takes: one uncompressed layer holding the binary as
// /app, the image's entrypoint. The node in e2e/k8s has no registry, so its
// pods run images made this way, with imagePullPolicy: Never.
//
//	ociimage -bin ./httpserver -name shutdown.local/httpserver:1 -o httpserver.tar
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func main() {
	bin := flag.String("bin", "", "static binary to put at /app")
	name := flag.String("name", "", "image name, such as shutdown.local/app:1")
	out := flag.String("o", "", "output tar")
	flag.Parse()
	if *bin == "" || *name == "" || *out == "" {
		log.Fatal("ociimage: -bin, -name and -o are required")
	}
	exe, err := os.ReadFile(*bin)
	if err != nil {
		log.Fatalf("ociimage: %v", err)
	}
	layer := tarOf(map[string][]byte{"app": exe}, 0o755)
	config := mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/app"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer)}},
	})
	manifest := mustJSON(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        describe("application/vnd.oci.image.config.v1+json", config),
		"layers":        []descriptor{describe("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	md := describe("application/vnd.oci.image.manifest.v1+json", manifest)
	md.Annotations = map[string]string{
		"io.containerd.image.name":          *name,
		"org.opencontainers.image.ref.name": (*name)[strings.LastIndex(*name, ":")+1:],
	}
	files := map[string][]byte{
		"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`),
		"index.json": mustJSON(map[string]any{"schemaVersion": 2, "manifests": []descriptor{md}}),
	}
	for _, b := range [][]byte{layer, config, manifest} {
		files["blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:")] = b
	}
	if err := os.WriteFile(*out, tarOf(files, 0o644), 0o644); err != nil {
		log.Fatalf("ociimage: %v", err)
	}
}

// tarOf makes a tar of files, in a fixed order, with fixed times, so that
// the same inputs make the same bytes.
func tarOf(files map[string][]byte, mode int64) []byte {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := w.WriteHeader(h); err != nil {
			log.Fatalf("ociimage: %v", err)
		}
		if _, err := w.Write(files[n]); err != nil {
			log.Fatalf("ociimage: %v", err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatalf("ociimage: %v", err)
	}
	return buf.Bytes()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func describe(mediaType string, b []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digest(b), Size: len(b)}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ociimage: %v", err))
	}
	return b
}
