//! The on-disk cache of compiled components, so a restart or a reload of an unchanged plugin
//! costs milliseconds instead of a compile.
//!
//! An entry is named by the SHA-256 of the component and a fingerprint of the engine (wasmtime
//! version and every setting that affects code generation), so an upgrade or a config change
//! simply misses. Its file starts with the SHA-256 of the rest: a truncated, corrupt or tampered
//! entry fails that check and the component is compiled again (and the entry rewritten).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::PluginError;

/// What happened on a load through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from a valid entry.
    Hit,
    /// No entry: compiled and stored.
    Miss,
    /// An entry existed but was unusable: compiled and replaced.
    Rejected,
    /// The host runs without a cache.
    Disabled,
}

#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

const CHECKSUM_LEN: usize = 32;

impl ArtifactCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The entry's file for this component on this engine.
    pub fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut fingerprint);
        let name = format!(
            "{}-wasmtime{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(wasm)),
            WASMTIME_MAJOR,
            fingerprint.finish()
        );
        self.dir.join(name)
    }

    pub fn load_or_compile(&self, engine: &Engine, wasm: &[u8]) -> Result<(Component, CacheOutcome), PluginError> {
        let path = self.entry_path(engine, wasm);
        let outcome = match std::fs::read(&path) {
            Ok(entry) => match deserialize_checked(engine, &entry) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "compiled-plugin cache entry rejected; recompiling");
                    CacheOutcome::Rejected
                }
            },
            Err(_) => CacheOutcome::Miss,
        };
        let component = Component::new(engine, wasm).map_err(|e| PluginError::Load(format!("{e:#}")))?;
        if let Err(error) = self.store(&path, &component) {
            // The cache is an optimisation: a read-only or full disk must not stop a plugin.
            tracing::warn!(path = %path.display(), %error, "cannot write compiled-plugin cache entry");
        }
        Ok((component, outcome))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), String> {
        let artifact = component.serialize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let mut entry = Vec::with_capacity(CHECKSUM_LEN + artifact.len());
        entry.extend_from_slice(&Sha256::digest(&artifact));
        entry.extend_from_slice(&artifact);
        // Write aside, then rename: a reader never sees half an entry.
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&temporary, &entry).map_err(|e| e.to_string())?;
        std::fs::rename(&temporary, path).map_err(|e| e.to_string())
    }
}

/// The wasmtime major version this crate builds against. Within a major version wasmtime
/// itself refuses artifacts of another exact version, which counts as a rejected entry.
const WASMTIME_MAJOR: u32 = 48;

/// Deserializes an entry after checking its checksum.
#[allow(unsafe_code)]
fn deserialize_checked(engine: &Engine, entry: &[u8]) -> Result<Component, String> {
    if entry.len() <= CHECKSUM_LEN {
        return Err("entry is truncated".into());
    }
    let (checksum, artifact) = entry.split_at(CHECKSUM_LEN);
    if Sha256::digest(artifact)[..] != *checksum {
        return Err("checksum mismatch".into());
    }
    // SAFETY: `Component::deserialize` trusts its input to be code wasmtime itself produced.
    // These bytes are exactly what `Component::serialize` wrote into our own cache directory:
    // the SHA-256 check above rejects any truncation or corruption, and wasmtime itself rejects
    // artifacts of another version or configuration. The cache directory is as trusted as the
    // binary (it lives in berth's data directory).
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))
}
