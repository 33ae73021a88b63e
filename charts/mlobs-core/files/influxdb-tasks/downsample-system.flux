// mlobs: every hour, the system samples of the hour before, per pipeline and step (run ids and GPUs
// dropped): the mean CPU and resident memory of the steps' processes, into the bucket mlobs_downsampled.
option task = {name: "mlobs-downsample-system", every: 1h, offset: 5m}

from(bucket: "mlobs")
    |> range(start: -task.every)
    |> filter(fn: (r) => r._measurement == "system" and (r._field == "cpu_percent" or r._field == "rss_bytes"))
    |> filter(fn: (r) => not exists r.gpu)
    |> group(columns: ["_measurement", "pipeline", "step", "_field"])
    |> aggregateWindow(every: task.every, fn: mean, createEmpty: false)
    |> to(bucket: "mlobs_downsampled")
