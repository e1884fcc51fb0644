module github.com/gracefulgo/shutdown/e2e/k8s

go 1.26.0

replace github.com/gracefulgo/shutdown => ../..

require github.com/gracefulgo/shutdown v0.0.0-00010101000000-000000000000

require golang.org/x/sync v0.25.0 // indirect
