module github.com/gracefulgo/shutdown/bench

go 1.26.0

require (
	github.com/gracefulgo/shutdown v0.0.0
	github.com/oklog/run v1.2.0
	go.uber.org/fx v1.24.0
)

require (
	go.uber.org/dig v1.19.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.26.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.0.0-20220412211240-33da011f77ad // indirect
)

replace github.com/gracefulgo/shutdown => ..
