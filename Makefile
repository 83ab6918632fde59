# fleetgate: build, test and benchmark entry points.
#
# `make` builds the shared runtime and every plugin into build/.
# `make test` installs missing Debian packages (when root), builds, and runs
# the unit, SQL and integration suites against real servers.

CC ?= cc
BUILD ?= build

WARN := -Wall -Wextra -Wconversion -Wshadow -Wformat=2 -Wstrict-prototypes \
	-Wwrite-strings -Wmissing-prototypes -Wno-sign-conversion -Werror
OPT ?= -O2 -g
SAN ?=
# V=1 shows the compiler command lines.
Q := $(if $(V),,@)
# Flags that need the -dev packages are expanded lazily, so that `make deps`
# works on a machine where they are not installed yet.
PKG_CFLAGS = $(shell pkg-config --cflags libcjson 2>/dev/null) \
	-I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -fPIC -pthread $(OPT) $(SAN) $(WARN) \
	-fvisibility=hidden -Icommon $(PKG_CFLAGS) $(CFLAGS)
LIBS_RT = -lpq -lcjson -lssl -lcrypto -lpthread

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
# Every directory under plugins/ is one plugin, built as fleetgate_NAME.so.
PLUGIN_NAMES := $(notdir $(wildcard plugins/*))
PLUGIN_SRC := $(wildcard plugins/*/*.c)
PLUGIN_OBJ := $(PLUGIN_SRC:%.c=$(BUILD)/obj/%.o)
plugin_obj = $(filter $(BUILD)/obj/plugins/$(1)/%,$(PLUGIN_OBJ))
TOOLS_SRC := $(wildcard test/tools/*.c)
TOOLS := $(TOOLS_SRC:test/tools/%.c=$(BUILD)/tools/%)
BENCH_SRC := $(wildcard test/bench/*.c)
BENCH := $(BENCH_SRC:test/bench/%.c=$(BUILD)/tools/%)
UNIT_SRC := $(wildcard test/unit/test_*.c)
UNIT := $(UNIT_SRC:test/unit/%.c=$(BUILD)/unit/%)

RUNTIME := $(BUILD)/libfleetgate.so
PLUGINS := $(PLUGIN_NAMES:%=$(BUILD)/fleetgate_%.so)

.PHONY: all deps test unit sql-test integration asan valgrind bench demo \
	lint format format-check clean

all: $(RUNTIME) $(PLUGINS) $(TOOLS) $(BENCH)

deps:
	@bash test/deps.sh

$(BUILD)/obj/%.o: %.c $(wildcard common/*.h plugins/*/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(RUNTIME): $(COMMON_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) -shared -pthread $(SAN) -Wl,-soname,libfleetgate.so -o $@ $^ $(LIBS_RT)

# A plugin's own libraries, beyond the runtime's: LIBS_name.
LIBS_ratelimit = -lhiredis

.SECONDEXPANSION:
.SECONDARY: $(PLUGIN_OBJ)
$(BUILD)/fleetgate_%.so: $$(call plugin_obj,$$*) $(RUNTIME)
	@echo "  LD      $@"
	$(Q)$(CC) -shared -pthread $(SAN) -o $@ $(call plugin_obj,$*) -L$(BUILD) \
		-lfleetgate -Wl,-rpath,'$$ORIGIN' $(LIBS_RT) $(LIBS_$*)

$(BUILD)/tools/%: test/tools/%.c $(wildcard test/tools/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) -pthread -o $@ $< \
		-lmosquitto -lssl -lcrypto -lpthread -lm

$(BUILD)/tools/%: test/bench/%.c $(wildcard test/bench/*.h test/tools/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) -pthread -o $@ $< \
		-lmosquitto -lssl -lcrypto -lpthread -lm

# Unit tests link the runtime and plugin objects statically, with the broker
# API replaced by the stubs in test/unit/stubs.c (a link seam).
# Every object but the plugins' entry points (each plugin defines the same
# three), so that one test binary can hold several plugins' logic.
UNIT_OBJ = $(COMMON_OBJ) $(filter-out %_plugin.o,$(PLUGIN_OBJ))
UNIT_LIBS = $(LIBS_RT) $(foreach p,$(PLUGIN_NAMES),$(LIBS_$(p))) -lmosquitto

UNIT_SUPPORT := test/unit/stubs.c test/unit/unit_run.c

$(BUILD)/unit/%: test/unit/%.c $(UNIT_SUPPORT) $(COMMON_OBJ) $(PLUGIN_OBJ) \
		$(wildcard test/unit/*.h test/tools/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS_ALL) -fvisibility=default \
		$(PLUGIN_NAMES:%=-Iplugins/%) -o $@ $< $(UNIT_SUPPORT) $(UNIT_OBJ) \
		$(UNIT_LIBS) $(shell pkg-config --libs check 2>/dev/null)

unit: $(UNIT)
	@bash test/run-unit.sh $(UNIT)

sql-test: all
	@bash test/sql/run.sh --standalone

integration: all
	@bash test/run-integration.sh

# The README's test command: everything a fresh machine needs, then every suite.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory sql-test
	@$(MAKE) --no-print-directory integration

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT='-O1 -g' \
		SAN='-fsanitize=address,undefined -fno-omit-frame-pointer' all unit
	@$(CC) -shared -fPIC -O2 -o build-asan/libfg_nobind.so \
		test/sanitize/nobind.c
	@FG_BUILD=$(CURDIR)/build-asan FG_SANITIZE=asan \
		bash test/run-integration.sh

valgrind: deps
	@$(MAKE) --no-print-directory all
	@FG_VALGRIND=1 bash test/run-unit.sh $(UNIT)
	@FG_SANITIZE=valgrind bash test/run-integration.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@bash test/bench/run.sh
	@bash test/bench/fanout.sh
	@bash test/bench/persist.sh
	@bash test/bench/ratelimit.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash examples/demo.sh

lint:
	@bash test/lint.sh

format:
	clang-format -i $(COMMON_SRC) $(wildcard common/*.h) $(PLUGIN_SRC) \
		$(wildcard plugins/*/*.h) $(TOOLS_SRC) $(wildcard test/tools/*.h) $(BENCH_SRC) \
		$(wildcard test/bench/*.h) $(UNIT_SRC)

format-check:
	@clang-format --dry-run --Werror $(COMMON_SRC) $(wildcard common/*.h) \
		$(PLUGIN_SRC) $(wildcard plugins/*/*.h) $(TOOLS_SRC) $(wildcard test/tools/*.h) \
		$(BENCH_SRC) $(wildcard test/bench/*.h) \
		$(UNIT_SRC) && echo "format-check: ok"

clean:
	rm -rf build build-asan
