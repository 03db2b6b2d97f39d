//! The host-facing types of a load: what it produced, how it failed, where the plaintext goes.

use zeroize::Zeroize;

/// What a successful load produced (mirrors `ovms::CustomLoaderStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// OpenVINO IR: XML in the model buffer, weights in the weights buffer.
    Ir,
    /// ONNX: the model in the model buffer, no weights.
    Onnx,
}

/// Blacklist answer (mirrors `ovms::CustomLoaderStatus::{OK, MODEL_BLACKLISTED}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlacklistStatus {
    /// Serve (or load) the version.
    Ok,
    /// The license no longer allows this version: unload it.
    Blacklisted,
}

/// A failed load: a one-line reason without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// The host's output buffers. The loader asks for each buffer's exact size once, then decrypts
/// into it; the memory belongs to the host.
pub trait OutputBuffers {
    /// Allocates the model buffer (`model_size` bytes) and, for IR, the weights buffer
    /// (`weights_size` bytes), returning both (the weights slice is empty for ONNX).
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), String>;

    /// Zeroizes whatever [`OutputBuffers::allocate`] handed out (a load that failed after the
    /// decryption finished).
    fn wipe(&mut self);
}

/// Plain vectors as output buffers (Rust hosts and tests).
#[derive(Default)]
pub struct VecBuffers {
    /// The model (IR XML or ONNX).
    pub model: Vec<u8>,
    /// The IR weights.
    pub weights: Vec<u8>,
}

impl OutputBuffers for VecBuffers {
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), String> {
        self.model.resize(model_size, 0);
        self.weights.resize(weights_size.unwrap_or(0), 0);
        Ok((&mut self.model, &mut self.weights))
    }

    fn wipe(&mut self) {
        self.model.zeroize();
        self.weights.zeroize();
    }
}
