"""One thin script per page; `app/Home.py` registers them with st.navigation."""
