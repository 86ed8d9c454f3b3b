def table():
    n = int(input("num "))
    m = 1
    print(n, "x", m, "=", n * m)

table()
print("end")
