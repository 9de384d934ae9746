# leasehold: make test runs everything; make demo shows it; make bench measures it.
SHELL := /bin/bash
GO ?= go

.PHONY: test unit lint controlplane integration demo bench chaos fuzz

test: lint unit

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...
