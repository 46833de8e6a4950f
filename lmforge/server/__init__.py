"""lmforge.server"""
