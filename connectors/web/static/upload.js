// Images the user attaches: decoded and shrunk in the browser before upload, so phones send
// a couple of MB instead of a 12-megapixel original. Videos go up as they are (the server
// samples their frames); only their size is checked here.

const MAX_SIDE = 2048;

/**
 * The image to upload: `file` itself when it is small enough, else re-encoded on a canvas with
 * its longest side at most 2048 px. Throws when the browser cannot decode it (not an image).
 */
export async function downscale(file, maxBytes) {
  const bitmap = await createImageBitmap(file); // throws for files that are not images
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  if (scale === 1 && file.size <= maxBytes) {
    bitmap.close();
    return file;
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const encode = (type) => new Promise((resolve) => canvas.toBlob(resolve, type, 0.88));
  let blob = await encode(file.type === "image/png" ? "image/png" : "image/jpeg");
  if (blob && blob.size > maxBytes && blob.type === "image/png") blob = await encode("image/jpeg");
  return blob;
}

/** True for a file the browser labels as a video (MP4, WebM, QuickTime …). */
export function isVideo(file) {
  return (file.type || "").startsWith("video/");
}
