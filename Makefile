# The two commands: `make run` and `make test`. Each installs what is missing first.
BUILD_DIR ?= build
BENCH_DIR ?= build-release
CMAKE_FLAGS ?=
ifeq ($(CI),true)
  CMAKE_FLAGS += -DCERTFLEET_WERROR=ON
endif
DATA_DIR ?= ./var

.PHONY: deps build run test bench clean install-mosquitto-plugin

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR)

run: build
	@scripts/run $(BUILD_DIR)/certfleet $(DATA_DIR)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -j2

bench: deps
	@cmake -S . -B $(BENCH_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCERTFLEET_TESTS=OFF -DCERTFLEET_BENCH=ON >/dev/null
	@cmake --build $(BENCH_DIR)
	@scripts/bench $(BENCH_DIR)

# The Mosquitto plugin (README: MQTT brokers); PLUGIN_DIR and DESTDIR say where.
PLUGIN_DIR ?= /usr/local/lib/certfleet
install-mosquitto-plugin: build
	@install -D -m 0644 $(BUILD_DIR)/src/broker/certfleet_mosquitto.so $(DESTDIR)$(PLUGIN_DIR)/certfleet_mosquitto.so
	@echo "installed $(DESTDIR)$(PLUGIN_DIR)/certfleet_mosquitto.so"

clean:
	rm -rf $(BUILD_DIR) $(BENCH_DIR)
