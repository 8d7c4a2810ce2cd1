"""HTTP side of the service: the API now, the dispatcher pages later."""
