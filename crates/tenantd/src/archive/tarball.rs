//! The `.tar.gz` of an export or backup, built and read on a blocking thread with the
//! `tar` and `flate2` crates, fed and drained through bounded channels: the async side
//! sends files (small ones whole, spooled ones by path, blobs chunk by chunk) and stores
//! the compressed chunks as they come, so no more than a few chunks are ever in memory.
//! Each file's SHA-256 and size go into `manifest.json`, the archive's last file.
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Bytes per stored chunk of the archive.
pub const CHUNK: usize = 1 << 20;

/// The archive format's version.
pub const FORMAT: i64 = 1;

/// One file of the archive.
pub struct Entry {
    /// Its path in the archive.
    pub path: String,
    /// Rows (ndjson) or items (json arrays), where that means something.
    pub count: Option<u64>,
    /// A blob's content type.
    pub content_type: Option<String>,
    /// Its content.
    pub body: Body,
}

/// A file's content.
pub enum Body {
    /// In memory (small files).
    Bytes(Vec<u8>),
    /// Spooled to a temporary file of this size, deleted once read.
    File(PathBuf, u64),
    /// Streamed in pieces adding up to this size (a blob).
    Pieces(u64, mpsc::Receiver<Vec<u8>>),
}

/// A file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its path in the archive.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Rows or items, where that means something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A blob's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: i64,
    /// The catalog schema version it was written at.
    pub schema_version: i64,
    /// Whose.
    pub tenant_id: String,
    /// `export` or `backup`.
    pub kind: String,
    /// RFC 3339.
    pub created_at: String,
    /// The tenant's audit chain checkpoint when it was written, if any.
    pub audit_checkpoint: Option<serde_json::Value>,
    /// Every other file.
    pub files: Vec<FileMeta>,
}

/// What a build made.
pub struct Built {
    /// The manifest written last.
    pub manifest: Manifest,
    /// Bytes of the `.tar.gz`.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

fn hex(ctx: Context) -> String {
    hex::encode(ctx.finish())
}

/// The compressed stream's end: hashes it and hands it on in [`CHUNK`]s.
struct ChunkSink {
    buf: Vec<u8>,
    out: mpsc::Sender<Vec<u8>>,
    hash: Context,
    size: u64,
}

impl ChunkSink {
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.out
            .blocking_send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the archive's store stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        self.hash.update(&b[..n]);
        self.size += n as u64;
        if self.buf.len() == CHUNK {
            self.ship()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads pieces from a channel (a blob being fetched, an archive being read).
pub struct PieceReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl PieceReader {
    /// Over `rx`; the end when its sender is dropped.
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            cur: Vec::new(),
            at: 0,
        }
    }
}

impl Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(p) => {
                    self.cur = p;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.at);
        out[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Hashes what passes through.
pub struct Hashing<R> {
    /// The reader.
    pub inner: R,
    /// SHA-256 so far.
    pub hash: Context,
    /// Bytes so far.
    pub size: u64,
}

impl<R> Hashing<R> {
    /// Over `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Context::new(&SHA256),
            size: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hash.update(&out[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Writes the entries `rx` brings, then the manifest (`head` with the files filled in),
/// as a `.tar.gz` handed to `out` in [`CHUNK`]s. Runs on a blocking thread.
pub fn build(mut rx: mpsc::Receiver<Entry>, out: mpsc::Sender<Vec<u8>>, mut head: Manifest) -> io::Result<Built> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sink = ChunkSink {
        buf: Vec::with_capacity(CHUNK),
        out,
        hash: Context::new(&SHA256),
        size: 0,
    };
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(sink, flate2::Compression::fast()));
    while let Some(e) = rx.blocking_recv() {
        let (size, reader): (u64, Box<dyn Read>) = match e.body {
            Body::Bytes(b) => (b.len() as u64, Box::new(io::Cursor::new(b))),
            Body::File(path, size) => {
                let f = std::fs::File::open(&path)?;
                // Unlinked now: the open handle reads it; nothing is left behind.
                let _ = std::fs::remove_file(&path);
                (size, Box::new(io::BufReader::new(f)))
            }
            Body::Pieces(size, pieces) => (size, Box::new(PieceReader::new(pieces))),
        };
        let mut hashing = Hashing::new(reader.take(size));
        tar.append_data(&mut header(size, mtime), &e.path, &mut hashing)?;
        if hashing.size != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {} of {size} bytes", e.path, hashing.size),
            ));
        }
        head.files.push(FileMeta {
            path: e.path,
            size,
            sha256: hex(hashing.hash),
            count: e.count,
            content_type: e.content_type,
        });
    }
    let manifest = serde_json::to_vec_pretty(&head)?;
    tar.append_data(
        &mut header(manifest.len() as u64, mtime),
        "manifest.json",
        &manifest[..],
    )?;
    let mut sink = tar.into_inner()?.finish()?;
    sink.ship()?;
    Ok(Built {
        manifest: head,
        size: sink.size,
        sha256: hex(sink.hash),
    })
}

/// One file read back from an archive.
pub enum Part {
    /// A file's bytes in pieces (then `End`).
    Piece(Vec<u8>),
    /// A file starts.
    Start(String, u64),
    /// The file ended: its path and SHA-256.
    End(String, String),
}

/// Reads a `.tar.gz` from `input` (its compressed bytes in pieces) and sends each file
/// as `Start`, its pieces, and `End` with its SHA-256 to `out`; returns the archive's
/// SHA-256 and size. Runs on a blocking thread; stops when `out` is dropped.
pub fn read(input: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<Part>) -> io::Result<(String, u64)> {
    let mut whole = Hashing::new(PieceReader::new(input));
    {
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&mut whole));
        for entry in ar.entries()? {
            let entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let size = entry.header().size()?;
            let send = |m| {
                out.blocking_send(m)
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped"))
            };
            send(Part::Start(path.clone(), size))?;
            let mut h = Hashing::new(entry);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = h.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                send(Part::Piece(buf[..n].to_vec()))?;
            }
            send(Part::End(path, hex(h.hash)))?;
        }
    }
    // Whatever follows the tar's end (its padding) counts towards the digest too.
    io::copy(&mut whole, &mut io::sink())?;
    Ok((hex(whole.hash), whole.size))
}
