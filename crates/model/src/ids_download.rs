//! Token ids copied from the device to the host without waiting on later work.
//!
//! `Tensor::to_vec1` is queued behind everything on the device's stream, so read
//! after the next step was launched it would wait for that step too. On CUDA the
//! copy is queued at `start` into page-locked memory the download keeps, and
//! `finish` waits for that copy alone. Elsewhere `start` simply reads the ids.

use candle_core::{Result, Tensor};

#[derive(Default)]
pub struct IdsDownload {
    state: State,
    #[cfg(feature = "cuda")]
    pinned: Option<cuda::Pinned>,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Read(Vec<u32>),
    #[cfg(feature = "cuda")]
    Copying(usize),
}

impl IdsDownload {
    /// Queues the copy of `ids` (`[n]` u32); a copy started before and not
    /// finished is forgotten.
    pub fn start(&mut self, ids: &Tensor) -> Result<()> {
        #[cfg(feature = "cuda")]
        if ids.device().is_cuda() {
            let n = cuda::start(&mut self.pinned, ids)?;
            self.state = State::Copying(n);
            return Ok(());
        }
        self.state = State::Read(ids.to_vec1()?);
        Ok(())
    }

    /// The ids of the copy `start` queued, once they are on the host.
    pub fn finish(&mut self) -> Result<Vec<u32>> {
        match std::mem::take(&mut self.state) {
            State::Idle => candle_core::bail!("ids download: nothing was started"),
            State::Read(ids) => Ok(ids),
            #[cfg(feature = "cuda")]
            State::Copying(n) => match &self.pinned {
                Some(p) => p.read(n),
                None => candle_core::bail!("ids download: no host buffer"),
            },
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{CudaEvent, PinnedHostSlice};
    use candle_core::{Result, Storage, Tensor};

    /// Page-locked host memory the copies land in (grown as needed, never shrunk),
    /// and an event recorded behind each copy. The slice's own event is recorded
    /// only when cudarc manages several streams, which candle's one stream is not,
    /// so reading it alone would not wait for the copy.
    pub struct Pinned {
        slice: PinnedHostSlice<u32>,
        copied: CudaEvent,
    }

    fn err(e: impl std::fmt::Debug) -> candle_core::Error {
        candle_core::Error::Msg(format!("ids download: {e:?}"))
    }

    /// Queues the copy of `ids` into `pinned`; returns how many ids it copies.
    pub fn start(pinned: &mut Option<Pinned>, ids: &Tensor) -> Result<usize> {
        let n = ids.elem_count();
        let (storage, layout) = ids.storage_and_layout();
        let Storage::Cuda(st) = &*storage else {
            candle_core::bail!("ids download: the ids are not on the GPU")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("ids download: the ids are not contiguous")
        };
        let src = st.as_cuda_slice::<u32>()?.slice(start..end);
        let stream = st.device.cuda_stream();
        if pinned.as_ref().is_none_or(|p| p.slice.len() < n) {
            let len = n.next_power_of_two().max(64);
            let ctx = stream.context();
            // SAFETY: only the first `n` elements are read, after a copy wrote them.
            let slice = unsafe { ctx.alloc_pinned_with_flags::<u32>(len, 0) }.map_err(err)?;
            let copied = ctx.new_event(None).map_err(err)?;
            *pinned = Some(Pinned { slice, copied });
        }
        let Some(dst) = pinned.as_mut() else {
            candle_core::bail!("ids download: no host buffer")
        };
        stream.memcpy_dtoh(&src, &mut dst.slice).map_err(err)?;
        dst.copied.record(&stream).map_err(err)?;
        Ok(n)
    }

    impl Drop for Pinned {
        /// A copy still landing in the memory must finish before it is freed.
        fn drop(&mut self) {
            let _ = self.copied.synchronize();
        }
    }

    impl Pinned {
        /// The first `n` ids, after the copy into them is done.
        pub fn read(&self, n: usize) -> Result<Vec<u32>> {
            self.copied.synchronize().map_err(err)?;
            let all = self.slice.as_slice().map_err(err)?;
            all.get(..n)
                .map(<[u32]>::to_vec)
                .ok_or_else(|| err("fewer ids than copied"))
        }
    }
}
