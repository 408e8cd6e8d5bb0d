//! The datanode's side of the framed data protocol (see
//! `strata_sdk::data::framed`): blob writes (with forwarding to followers)
//! and reads on connections the listener recognised as framed.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use strata_common::{Result, StrataError};
use strata_proto::data::{ReadBlobRequest, WriteBlobRequest};
use strata_sdk::data::framed::{
    KIND_READ, KIND_WRITE, READ_BUFFER, STATUS_ERR, STATUS_OK, encode_error, read_frame, write_frame,
};
use tokio::io::{BufReader, BufWriter};
use tokio::net::TcpStream;

use crate::service::DataService;

/// Whether a connection's first byte starts a framed request.
pub fn is_framed(first: u8) -> bool {
    first == KIND_WRITE || first == KIND_READ
}

/// Serves framed requests on `stream` until the peer closes it.
pub async fn serve_connection(stream: TcpStream, service: Arc<DataService>) {
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::with_capacity(READ_BUFFER, r), BufWriter::with_capacity(1 << 20, w));
    loop {
        let (kind, header, payload) = match read_frame(&mut r).await {
            Ok(frame) => frame,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "framed connection ended");
                }
                return;
            }
        };
        let result = match kind {
            KIND_WRITE => handle_write(&service, &header, payload).await.map(|()| (Vec::new(), Bytes::new())),
            KIND_READ => handle_read(&service, &header).await,
            other => Err(StrataError::invalid(format!("unknown frame kind {other}"))),
        };
        let written = match result {
            Ok((header, payload)) => write_frame(&mut w, STATUS_OK, &header, &payload).await,
            Err(e) => write_frame(&mut w, STATUS_ERR, &encode_error(&e), &[]).await,
        };
        if written.is_err() {
            return;
        }
    }
}

async fn handle_write(service: &DataService, header: &[u8], payload: Bytes) -> Result<()> {
    let mut request = WriteBlobRequest::decode(header).map_err(|e| StrataError::invalid(format!("header: {e}")))?;
    request.data = payload;
    service.write(request).await
}

async fn handle_read(service: &DataService, header: &[u8]) -> Result<(Vec<u8>, Bytes)> {
    let request = ReadBlobRequest::decode(header).map_err(|e| StrataError::invalid(format!("header: {e}")))?;
    let mut response = service.read(request).await?;
    // The payload travels raw after the header.
    let data = std::mem::take(&mut response.data);
    Ok((response.encode_to_vec(), data))
}
