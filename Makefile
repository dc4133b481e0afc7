# Thin wrapper: ./dev does the work (it installs what is missing first).
.PHONY: demo test setup
demo:
	./dev demo
test:
	./dev test
setup:
	./dev setup
