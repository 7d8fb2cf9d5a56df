
// ---- appended by bench/experiments.mjs (variant s3-pooled-*): a prototype, not shipped code ----
// A drop-in for lib-storage's Upload as S3Store uses it (new X({client, params, partSize, queueSize}),
// done(), uploadId). Parts are filled by copying the body's chunks into a pool of
// queueSize + 1 part buffers that are reused once their UploadPart has answered, so
// there is exactly one copy per byte, into memory that is already mapped: no
// Buffer.concat per part (lib-storage's getChunkStream) and no fresh 16 MiB
// allocations to page-fault in.
import {
  CreateMultipartUploadCommand as __Create,
  UploadPartCommand as __UploadPart,
  CompleteMultipartUploadCommand as __Complete,
  PutObjectCommand as __Put,
} from '@aws-sdk/client-s3';

class PooledUpload {
  constructor({ client, params, partSize, queueSize }) {
    this.client = client;
    this.params = params;
    this.partSize = partSize;
    this.queueSize = queueSize;
    this.uploadId = undefined;
  }

  async done() {
    const { Body, ...head } = this.params;
    const { Bucket, Key } = head;
    const pool = [];
    const take = () => pool.pop() ?? Buffer.allocUnsafeSlow(this.partSize);
    const parts = [];
    const inflight = new Set();
    let failure;
    let partNumber = 0;
    let cur = take();
    let fill = 0;
    const send = async (buf, len) => {
      if (!this.uploadId) {
        const r = await this.client.send(new __Create(head));
        this.uploadId = r.UploadId;
      }
      const n = ++partNumber;
      const p = this.client
        .send(new __UploadPart({ Bucket, Key, UploadId: this.uploadId, PartNumber: n, Body: buf.subarray(0, len), ContentLength: len }))
        .then((r) => {
          parts.push({ PartNumber: n, ETag: r.ETag });
          pool.push(buf);
        })
        .catch((e) => {
          failure ??= e;
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
      while (inflight.size >= this.queueSize && !failure) await Promise.race(inflight);
      if (failure) throw failure;
    };
    for await (const chunk of Body) {
      let off = 0;
      while (off < chunk.length) {
        const k = Math.min(this.partSize - fill, chunk.length - off);
        chunk.copy(cur, fill, off, off + k);
        fill += k;
        off += k;
        if (fill === this.partSize) {
          // Only a full part when more data follows; the last one goes below.
          const full = cur;
          cur = take();
          fill = 0;
          await send(full, this.partSize);
        }
      }
    }
    if (partNumber === 0) {
      // Smaller than one part: a plain PutObject.
      await this.client.send(new __Put({ ...head, Body: cur.subarray(0, fill), ContentLength: fill }));
      return;
    }
    if (fill > 0) await send(cur, fill);
    await Promise.all(inflight);
    if (failure) throw failure;
    parts.sort((a, b) => a.PartNumber - b.PartNumber);
    await this.client.send(new __Complete({ Bucket, Key, UploadId: this.uploadId, MultipartUpload: { Parts: parts } }));
  }
}
