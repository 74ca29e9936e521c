"""Downloads through aria2: the downloader, one download in flight, placing files, the queue."""
