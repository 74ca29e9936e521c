"""Several machines sharing one cache through Redis: this node's view of it, and `serve`."""
