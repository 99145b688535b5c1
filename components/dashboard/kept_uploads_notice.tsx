/** Says that this browser keeps chunks the server lacks, and where to send them. */
export function KeptUploadsNotice({ count }: { count: number }) {
  if (count <= 0) return null;
  return (
    <p class="warning" id="kept-uploads">
      This browser keeps chunks of {count} recording
      {count === 1 ? "" : "s"}{" "}
      that are not all on the server yet (the page recording it closed).{" "}
      <a href="/record">Open the recorder</a> to upload them.
    </p>
  );
}
