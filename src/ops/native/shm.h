// Same-host shared memory for the collectives (src/collectives/shm-*.ts): POSIX
// segments mapped into every local worker, process-shared futex waits on counters
// inside them, and the fixed-order sum that reads the peers' slots in place.
// The bindings are in shm.cc too (registerShm, called from addon.cc's Init).
#pragma once
#include <napi.h>

namespace sf {

/** Adds shmCreate, shmOpen, shmUnlink, shmWait, shmStore, shmReduce, shmFreeBytes to the addon's exports. */
void registerShm(Napi::Env env, Napi::Object exports);

}  // namespace sf
