n = int(input("Times table for: "))
i = 1
total = 0
while i <= 10:
    print(n, "x", i, "=", n * i)
    total = total + n * i
    i = i + 1
print("total", total)
