"""Clients: the native sender (gRPC TaskService) and, for the seed's users, its tools' shapes."""
