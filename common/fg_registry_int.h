/*
 * Row access for code inside the runtime that walks a whole registry (the
 * snapshot writer). Not part of the plugins' API.
 */
#ifndef FG_REGISTRY_INT_H
#define FG_REGISTRY_INT_H

#include "fg_registry.h"

const struct fg_device *fg_registry__devices(const struct fg_registry *reg);
const struct fg_cert *fg_registry__certs(const struct fg_registry *reg);
const struct fg_account *fg_registry__accounts(const struct fg_registry *reg);

#endif
