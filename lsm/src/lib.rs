//! hashkv-lsm: our own LSM tree (being written).
