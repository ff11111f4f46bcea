# Included by tests/c/Makefile and tests/cpp/Makefile (TOP set first): the
# library as pkg-config finds it, the in-tree target/pkgconfig when nothing
# else is set.

ifeq ($(origin PKG_CONFIG_PATH),undefined)
export PKG_CONFIG_PATH := $(TOP)/target/pkgconfig
endif

# (make before 4.4 does not pass exported variables to $(shell))
PKG_CONFIG := PKG_CONFIG_PATH='$(PKG_CONFIG_PATH)' pkg-config

PKG_OK := $(shell $(PKG_CONFIG) --exists handoff && echo yes)
ifneq ($(PKG_OK),yes)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
$(error pkg-config cannot find handoff.pc (PKG_CONFIG_PATH=$(PKG_CONFIG_PATH)); run `make build` at the top first)
endif
endif
HANDOFF_CFLAGS  := $(shell $(PKG_CONFIG) --cflags handoff)
HANDOFF_LIBS    := $(shell $(PKG_CONFIG) --libs handoff)
HANDOFF_VERSION := $(shell $(PKG_CONFIG) --modversion handoff)
HANDOFF_LIBDIR  := $(shell $(PKG_CONFIG) --variable=libdir handoff)
HANDOFF_INCDIR  := $(shell $(PKG_CONFIG) --variable=includedir handoff)
HANDOFF_LIB     := $(HANDOFF_LIBDIR)/libhandoff.so
HANDOFF_HEADER  := $(HANDOFF_INCDIR)/handoff.h
