# ems: edge-to-cloud energy management system.
#
#   make            build every binary into build/
#   make test       install what is missing, build with ASan+UBSan, run every test
#   make demo       run the whole system locally (see README.md);
#                   make demo GATEWAYS=2: two gateways joined by NATS
#   make fuzz       build the libFuzzer targets into build/fuzz/
#   make bench      run the benchmarks (results go to docs/benchmarks.md by hand)
#   make bench-ladder  the fleet benchmark at four sizes, one table (scripts/bench-ladder.sh)
#   make deps       install the Debian packages the build and the tests need
#   make cross      ems-edge for the Raspberry Pi (arm64, armhf) into build/ (scripts/cross.sh)
#   make deb-arm64  the Debian package build/ems-edge_VERSION_arm64.deb (also deb-armhf, deb)
#
# Sources are discovered by folder, so a new module is a new .c file in the
# right folder and nothing else:
#   common/*.c common/net/*.c  -> build/libems.a      (shared by edge and cloud)
#   edge/*.c edge/hw/*.c       -> build/ems-edge       (edge/main.c holds main;
#                                                       edge/hw: the hardware back end)
#   cloud/lib/*.c              -> build/libems-cloud.a (the async PostgreSQL driver,
#                                                       the migrations, credentials and roles:
#                                                       gateway, DB writer, emsctl)
#   cloud/gateway/*.c          -> build/ems-gateway    (cloud/gateway/main.c)
#   cloud/dbwriter/*.c         -> build/ems-dbwriter   (cloud/dbwriter/main.c)
#   cloud/emsctl/*.c           -> build/emsctl         (cloud/emsctl/main.c)
#   test/unit/test_*.c         -> build/test/test_*    (one binary per file)
#   test/fuzz/fuzz_*.c         -> build/fuzz/fuzz_*    (clang, libFuzzer)

BUILD    ?= build
CC       ?= cc
SANITIZE ?=
OPT      ?= -O2

CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g $(OPT) -MMD -MP
ifneq ($(SANITIZE),)
CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS     += -fsanitize=$(SANITIZE)
endif
CFLAGS  += $(CFLAGS_BASE)

PKG_CONFIG ?= pkg-config
# mbedTLS, wslay and http-parser ship no .pc file on Debian 12.
LIBS_COMMON  = $(shell $(PKG_CONFIG) --libs libuv jansson 2>/dev/null || echo -luv -ljansson) \
               -lmbedtls -lmbedx509 -lmbedcrypto -lwslay -lhttp_parser -lm
LIBS_EDGE    = $(LIBS_COMMON) -lsqlite3 $(shell $(PKG_CONFIG) --libs libgpiod 2>/dev/null || echo -lgpiod)
# libnats (Debian's libnats-dev): the gateways' message bus (docs/scaling.md).
# Only ems-gateway (and the unit tests, which link everything) need it, so
# the DB writer, emsctl and their image build without it.
LIBS_NATS    = $(shell $(PKG_CONFIG) --libs libnats 2>/dev/null || echo -lnats)
LIBS_CLOUD   = $(LIBS_COMMON) $(shell $(PKG_CONFIG) --libs libpq 2>/dev/null || echo -lpq)
LIBS_ALL     = $(LIBS_COMMON) -lsqlite3 $(shell $(PKG_CONFIG) --libs libgpiod libpq 2>/dev/null || echo -lgpiod -lpq) $(LIBS_NATS)
CFLAGS += $(shell $(PKG_CONFIG) --cflags libpq 2>/dev/null)

COMMON_SRC   = $(wildcard common/*.c common/net/*.c)
EDGE_SRC     = $(filter-out edge/main.c,$(wildcard edge/*.c edge/hw/*.c))
CLOUDLIB_SRC = $(wildcard cloud/lib/*.c)
GATEWAY_SRC  = $(filter-out cloud/gateway/main.c,$(wildcard cloud/gateway/*.c))
DBWRITER_SRC = $(filter-out cloud/dbwriter/main.c,$(wildcard cloud/dbwriter/*.c))
EMSCTL_SRC   = $(filter-out cloud/emsctl/main.c,$(wildcard cloud/emsctl/*.c))
TEST_SRC     = $(wildcard test/unit/test_*.c)
FUZZ_SRC     = $(wildcard test/fuzz/fuzz_*.c)
BENCH_SRC    = $(wildcard test/bench/bench_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIB_COMMON   = $(BUILD)/libems.a
LIB_EDGE     = $(BUILD)/libems-edge.a
LIB_CLOUD    = $(BUILD)/libems-cloud.a
LIB_GATEWAY  = $(BUILD)/libems-gateway.a
LIB_DBWRITER = $(BUILD)/libems-dbwriter.a
LIB_EMSCTL   = $(BUILD)/libems-emsctl.a

BINS  = $(if $(wildcard edge/main.c),$(BUILD)/ems-edge) \
        $(if $(wildcard cloud/gateway/main.c),$(BUILD)/ems-gateway) \
        $(if $(wildcard cloud/dbwriter/main.c),$(BUILD)/ems-dbwriter) \
        $(if $(wildcard cloud/emsctl/main.c),$(BUILD)/emsctl)
TESTS = $(patsubst test/unit/%.c,$(BUILD)/test/%,$(TEST_SRC))
BENCHES = $(patsubst test/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all tests test test-unit test-faults demo fuzz bench deps clean format dashboard
all: $(BINS)
tests: $(TESTS)

# Each component sees only its own headers and those of the layers below
# it, so the build enforces the layers: common/ cannot include an edge or
# cloud header, the gateway cannot include the DB writer's. A header in the
# including file's own folder is found without -I. Tests, benchmarks and
# fuzzers see everything.
INC_COMMON   = -Icommon -Icommon/net
INC_EDGE     = $(INC_COMMON) -Iedge -Iedge/hw
INC_CLOUDLIB = $(INC_COMMON) -Icloud/lib
INC_GATEWAY  = $(INC_CLOUDLIB) -Icloud/gateway
INC_DBWRITER = $(INC_CLOUDLIB) -Icloud/dbwriter
INC_EMSCTL   = $(INC_CLOUDLIB) -Icloud/emsctl
INC_ALL      = $(INC_EDGE) -Icloud/lib -Icloud/gateway -Icloud/dbwriter -Icloud/emsctl -Itest/unit
$(BUILD)/obj/common/%.o:         INC = $(INC_COMMON)
$(BUILD)/obj/edge/%.o:           INC = $(INC_EDGE)
$(BUILD)/obj/cloud/lib/%.o:      INC = $(INC_CLOUDLIB)
$(BUILD)/obj/cloud/gateway/%.o:  INC = $(INC_GATEWAY)
$(BUILD)/obj/cloud/dbwriter/%.o: INC = $(INC_DBWRITER)
$(BUILD)/obj/cloud/emsctl/%.o:   INC = $(INC_EMSCTL)
$(BUILD)/obj/test/%.o:           INC = $(INC_ALL)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC) -c $< -o $@

# An archive with no members is still a valid archive, so a folder that has
# no sources yet does not break the link.
define archive
	@mkdir -p $(dir $@)
	@rm -f $@
	$(AR) rcs $@ $^ 2>/dev/null || $(AR) rc $@
endef
$(LIB_COMMON):   $(call obj,$(COMMON_SRC))   ; $(archive)
$(LIB_EDGE):     $(call obj,$(EDGE_SRC))     ; $(archive)
$(LIB_CLOUD):    $(call obj,$(CLOUDLIB_SRC)) ; $(archive)
$(LIB_GATEWAY):  $(call obj,$(GATEWAY_SRC))  ; $(archive)
$(LIB_DBWRITER): $(call obj,$(DBWRITER_SRC)) ; $(archive)
$(LIB_EMSCTL):   $(call obj,$(EMSCTL_SRC))   ; $(archive)

$(BUILD)/ems-edge: $(call obj,edge/main.c) $(LIB_EDGE) $(LIB_COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_EDGE)
$(BUILD)/ems-gateway: $(call obj,cloud/gateway/main.c) $(LIB_GATEWAY) $(LIB_CLOUD) $(LIB_COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CLOUD) $(LIBS_NATS)
$(BUILD)/ems-dbwriter: $(call obj,cloud/dbwriter/main.c) $(LIB_DBWRITER) $(LIB_CLOUD) $(LIB_COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CLOUD)
$(BUILD)/emsctl: $(call obj,cloud/emsctl/main.c) $(LIB_EMSCTL) $(LIB_CLOUD) $(LIB_COMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_CLOUD)

# Every unit test links every component library; a static archive only
# contributes the objects a test actually uses.
$(BUILD)/test/%: $(call obj,test/unit/%.c) $(LIB_EDGE) $(LIB_GATEWAY) $(LIB_DBWRITER) $(LIB_EMSCTL) $(LIB_CLOUD) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ALL)

# Benchmarks link like unit tests; they measure, they never assert timings.
$(BUILD)/bench/%: $(call obj,test/bench/%.c) $(LIB_EDGE) $(LIB_GATEWAY) $(LIB_DBWRITER) $(LIB_EMSCTL) $(LIB_CLOUD) $(LIB_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_ALL)
# bench_fleet's device connections (a lean WebSocket client) are a module
# of their own.
$(BUILD)/bench/bench_fleet: $(call obj,test/bench/lean_ws.c)

# ---------------------------------------------------------------- fuzzing
FUZZ_CC     ?= clang
FUZZ_CFLAGS  = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
               -Icommon -Icommon/net
fuzz: $(patsubst test/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
$(BUILD)/fuzz/%: test/fuzz/%.c $(COMMON_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(COMMON_SRC) $(LIBS_COMMON)

# ---------------------------------------------------------------- dashboard
# The web page (cloud/dashboard, npm + esbuild) as static files in
# $(BUILD)/dashboard, which the gateway serves. npm ci runs when
# node_modules is missing or older than the lock file.
DASH = cloud/dashboard
dashboard: $(DASH)/node_modules/.package-lock.json
	cd $(DASH) && node build.mjs --outdir $(abspath $(BUILD))/dashboard
$(DASH)/node_modules/.package-lock.json: $(DASH)/package-lock.json
	cd $(DASH) && npm ci --no-audit --no-fund

# ---------------------------------------------------------------- hardware emulator
# $(BUILD)/hwemu/libemshwemu.so: an LD_PRELOAD emulator of /dev/i2c-N and
# /dev/gpiochipN (INA228/INA226, TMP102, ADE7953, MCP4725, a GPIO chip) with
# the simulated plant behind it, so the unchanged ems-edge runs its hardware
# back end without a Raspberry Pi (test/hwemu/README.md). It is preloaded
# into sanitized and plain programs alike, so it is never sanitized (no ASan
# runtime inside it) and links only libc, -ldl, -lm and -lpthread. It builds
# with any CC and BUILD, e.g. make BUILD=X CC=aarch64-linux-gnu-gcc
# AR=aarch64-linux-gnu-ar X/hwemu/libemshwemu.so for qemu-user.
# $(BUILD)/hwemu/hwemu_check is the suite's libgpiod test driver (built with
# the normal, possibly sanitized, flags).
HWEMU_SRC    = $(wildcard test/hwemu/*.c) edge/plant.c
HWEMU_OBJ    = $(patsubst %.c,$(BUILD)/hwemu/obj/%.o,$(HWEMU_SRC))
HWEMU_CFLAGS = -std=c11 -D_GNU_SOURCE -U_FORTIFY_SOURCE -Wall -Wextra -Werror -g -O2 -MMD -MP \
               -fPIC -fvisibility=hidden -fno-delete-null-pointer-checks -Icommon -Iedge -Itest/hwemu
HWEMU_LIBS   = $(shell $(PKG_CONFIG) --libs libgpiod 2>/dev/null || echo -lgpiod)
.PHONY: hwemu
hwemu: $(BUILD)/hwemu/libemshwemu.so $(BUILD)/hwemu/hwemu_check
$(BUILD)/hwemu/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(HWEMU_CFLAGS) -c $< -o $@
$(BUILD)/hwemu/libemshwemu.so: $(HWEMU_OBJ)
	$(CC) -shared -Wl,--no-undefined -o $@ $^ -ldl -lm -lpthread
$(BUILD)/hwemu/hwemu_check: test/hwemu/check/hwemu_check.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(HWEMU_LIBS) -lm
# ---------------------------------------------------------------- end of hardware emulator

# ---------------------------------------------------------------- the two commands
SAN_BUILD = build/san

deps:
	@scripts/deps.sh

# make test: sanitized build of everything, then the whole suite. The plain
# build is made too, because emsctl and the demo live at build/.
test:
	@scripts/deps.sh --check || scripts/deps.sh
	$(MAKE) all
	$(MAKE) BUILD=$(SAN_BUILD) SANITIZE=address,undefined OPT=-O1 all tests hwemu
	$(MAKE) fuzz BUILD=$(SAN_BUILD)
	test/run.sh $(SAN_BUILD)

# Only the C unit tests, quickly, without the slow suites.
test-unit:
	$(MAKE) BUILD=$(SAN_BUILD) SANITIZE=address,undefined OPT=-O1 all tests
	EMS_TEST_ONLY=unit test/run.sh $(SAN_BUILD)

# The fault-injection suite at full length (docs/faults.md): 60 s outages and
# a one-hour outage, about 25 minutes; `make test` runs its short form.
# FAULTS_ARGS adds options, e.g. FAULTS_ARGS="--hour real" (a real hour).
test-faults:
	$(MAKE) all
	/usr/bin/python3 test/faults/faults.py --full --build $(BUILD) $(FAULTS_ARGS)

# GATEWAYS=N: N gateways sharing the port, joined by nats-server (docs/scaling.md).
GATEWAYS ?= 1
demo:
	@scripts/deps.sh --check || scripts/deps.sh
	$(MAKE) all dashboard hwemu
	@GATEWAYS=$(GATEWAYS) scripts/demo.sh

bench:
	$(MAKE) all $(BENCHES)
	@scripts/bench.sh

# The fleet benchmark at 2,000 / 10,000 / 20,000 / 50,000 devices, one
# table (scripts/bench-ladder.sh; LADDER_ARGS="--steps ... --nice -10").
# Minutes per step; not part of `make bench` or `make test`.
.PHONY: bench-ladder
bench-ladder:
	$(MAKE) all $(BUILD)/bench/bench_fleet
	@scripts/bench-ladder.sh --build $(BUILD) $(LADDER_ARGS)

# ems-edge for the Raspberry Pi: build/arm64/ems-edge, build/armhf/ems-edge and
# installable bundles build/ems-edge-{arm64,armhf}.tar.gz (docs/deploy-edge.md).
.PHONY: cross
cross:
	@scripts/cross.sh

# ---------------------------------------------------------------- Debian packages
# build/ems-edge_<version>_arm64.deb and ..._armhf.deb for Raspberry Pi OS /
# Debian 12 (scripts/deb.sh; docs/deploy-edge.md, "Install from the .deb").
# They build into $(BUILD), so `make BUILD=DIR deb-arm64` leaves build/ alone.
.PHONY: deb deb-arm64 deb-armhf
deb: deb-arm64 deb-armhf
deb-arm64 deb-armhf:
	@scripts/deb.sh --build-root $(BUILD) $(@:deb-%=%)
# ---------------------------------------------------------------- end of Debian packages

clean:
	rm -rf build

format:
	clang-format -i $(wildcard common/*.[ch] common/net/*.[ch] edge/*.[ch] cloud/*/*.[ch] test/unit/*.[ch] test/fuzz/*.c)

-include $(shell find $(BUILD) -name '*.d' -type f 2>/dev/null)
