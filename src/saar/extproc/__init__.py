"""Envoy adapter: the only package that imports grpc and Envoy's protobuf types."""
