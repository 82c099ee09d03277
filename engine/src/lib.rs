//! hashkv: the engine (being written).
